"""Rule predict: foreground probabilities of a dataset's volume (see unet_pipeline.predict)."""

import _library_path  # noqa: F401 (makes unet_pipeline importable)
from unet_pipeline.predict import PredictionOptions, predict_volume
from unet_pipeline.rule_logging import rule_logging

with rule_logging(snakemake):
    options = PredictionOptions(**snakemake.params.options, threads=snakemake.threads)
    predict_volume(snakemake.input.model, snakemake.input.volume, snakemake.output[0], options)
