"""Rules predict, predict_setup and predict_shard: foreground probabilities of a volume (see unet_pipeline.stages.predict).

prediction.shards 1: one job predicts the whole volume. More: a setup job, one job per shard, and the
predict job that checks and finishes the output.
"""

import _library_path  # noqa: F401 (makes unet_pipeline importable)
from unet_pipeline.core.rule_logging import rule_logging
from unet_pipeline.stages.predict import (
    PredictionOptions,
    finish_prediction,
    predict_shard,
    predict_volume,
    prepare_prediction,
)

with rule_logging(snakemake):
    memory_mb = getattr(snakemake.resources, "mem_mb", None)  # bounds the tile size chosen when input_size is null
    options = PredictionOptions(**snakemake.params.options, threads=snakemake.threads, memory_mb=memory_mb)
    model, volume = snakemake.input.model, snakemake.input.volume
    step = snakemake.params.get("step", "all")
    if step == "all":
        predict_volume(model, volume, snakemake.output[0], options)
    elif step == "setup":
        prepare_prediction(model, volume, snakemake.params.prediction, options)
    elif step == "shard":
        shard, shards = map(int, snakemake.wildcards.shard.split("-of-"))
        predict_shard(model, volume, snakemake.params.prediction, shard, shards, options)
        open(snakemake.output[0], "w").close()
    else:
        finish_prediction(model, volume, snakemake.output[0], options)
