"""Rule segment: instance labels and a per-cell table from a prediction (see unet_pipeline.stages.segment)."""

import _library_path  # noqa: F401 (makes unet_pipeline importable)
from unet_pipeline.core.rule_logging import rule_logging
from unet_pipeline.stages.segment import SegmentationOptions, evaluated_threshold, segment_volume

with rule_logging(snakemake):
    threshold = snakemake.params.threshold
    if threshold is None:
        threshold = evaluated_threshold(snakemake.input.summary)
    options = SegmentationOptions(threshold=threshold, min_size=snakemake.params.min_size)
    segment_volume(snakemake.input.prediction, snakemake.output.cells, snakemake.output.table, options)
