"""Rule evaluate: ISBI 2012 scores of a prediction, table, summary and figures (see unet_pipeline.stages.evaluate)."""

import _library_path  # noqa: F401 (makes unet_pipeline importable)
from unet_pipeline.core.rule_logging import rule_logging
from unet_pipeline.stages.evaluate import evaluate, plot_overlays, plot_threshold_curves

with rule_logging(snakemake):
    output = snakemake.output
    summary = evaluate(
        snakemake.input.prediction, snakemake.input.volume, output.sections, output.summary, workers=snakemake.threads
    )
    plot_threshold_curves(summary, output.thresholds)
    plot_overlays(
        snakemake.input.prediction,
        snakemake.input.volume,
        output.overlays,
        threshold=summary["metrics"]["v_rand"]["threshold"],
    )
