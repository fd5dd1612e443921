"""Rule segment: instance labels and a per-cell table from a prediction (see unet_pipeline.stages.segment)."""

import _library_path  # noqa: F401 (makes unet_pipeline importable)
from unet_pipeline.core.rule_logging import rule_logging
from unet_pipeline.segmentation.methods import SegmentationOptions
from unet_pipeline.stages.segment import chosen_setting, segment_volume

with rule_logging(snakemake):
    options = SegmentationOptions(**snakemake.params.options)
    if hasattr(snakemake.input, "summary"):
        options = chosen_setting(snakemake.input.summary, options)
    segment_volume(snakemake.input.prediction, snakemake.output.cells, snakemake.output.table, options)
