"""Rule evaluate: ISBI 2012 scores of a prediction and of its cells, tables, summary and figures (see
unet_pipeline.stages.evaluate)."""

import _library_path  # noqa: F401 (makes unet_pipeline importable)
from unet_pipeline.core.rule_logging import rule_logging
from unet_pipeline.segmentation.methods import SegmentationOptions, with_summary_setting
from unet_pipeline.stages.evaluate import evaluate, plot_cell_overlays, plot_overlays, plot_threshold_curves

with rule_logging(snakemake):
    output = snakemake.output
    # the cells are scored at every setting of the method; a configured setting is the one the segment stage uses
    cells = SegmentationOptions(**snakemake.params.segmentation)
    summary = evaluate(
        snakemake.input.prediction,
        snakemake.input.volume,
        output.sections,
        output.summary,
        workers=snakemake.threads,
        cells=cells,
        cells_csv=output.cells,
    )
    plot_threshold_curves(summary, output.thresholds)
    plot_overlays(
        snakemake.input.prediction,
        snakemake.input.volume,
        output.overlays,
        threshold=summary["metrics"]["v_rand"]["threshold"],
    )
    chosen = with_summary_setting(summary, cells, output.summary)  # the cells the segment stage will write
    plot_cell_overlays(snakemake.input.prediction, snakemake.input.volume, output.cell_overlays, chosen)
