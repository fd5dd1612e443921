"""Rule weight_maps: the paper's loss weights for every labelled section (see unet_pipeline.stages.weight_maps)."""

import _library_path  # noqa: F401 (makes unet_pipeline importable)
from unet_pipeline.core.rule_logging import rule_logging
from unet_pipeline.stages.weight_maps import plot_weight_map, write_weight_maps

with rule_logging(snakemake):
    write_weight_maps(
        snakemake.input.volume,
        snakemake.output.weights,
        w0=snakemake.params.w0,
        sigma=snakemake.params.sigma,
        workers=snakemake.threads,
    )
    section = snakemake.config["weight_map"]["figure_section"]
    plot_weight_map(snakemake.input.volume, snakemake.output.weights, snakemake.output.figure, section)
