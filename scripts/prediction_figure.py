"""Rule prediction_figure: image and probability of a few sections (see unet_pipeline.stages.evaluate)."""

import _library_path  # noqa: F401 (makes unet_pipeline importable)
from unet_pipeline.core.rule_logging import rule_logging
from unet_pipeline.stages.prediction_figure import plot_predictions

with rule_logging(snakemake):
    plot_predictions(snakemake.input.prediction, snakemake.input.volume, snakemake.output[0])
