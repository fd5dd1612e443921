"""Rules segment and segment_shard: instance labels and a per-cell table from a prediction (see
unet_pipeline.stages.segment).

segmentation.shards 1: the segment job makes the cells alone. More: one segment_shard job per shard, then the
segment job writes the cells from their work.
"""

import _library_path  # noqa: F401 (makes unet_pipeline importable)
from unet_pipeline.core.rule_logging import rule_logging
from unet_pipeline.segmentation.methods import SegmentationOptions
from unet_pipeline.stages.segment import chosen_setting, segment_shard, segment_volume

with rule_logging(snakemake):
    options = SegmentationOptions(**snakemake.params.options)
    if hasattr(snakemake.input, "summary"):
        options = chosen_setting(snakemake.input.summary, options)
    if snakemake.params.step == "shard":
        shard, shards = map(int, snakemake.wildcards.shard.split("-of-"))
        segment_shard(snakemake.input.prediction, snakemake.params.cells, options, shard, shards)
        open(snakemake.output[0], "w").close()
    else:
        segment_volume(snakemake.input.prediction, snakemake.output.cells, snakemake.output.table, options)
