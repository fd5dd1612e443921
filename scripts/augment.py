"""Rule augment: the augmented training set of a dataset for one preset (see unet_pipeline.stages.augment)."""

import _library_path  # noqa: F401 (makes unet_pipeline importable)
from unet_pipeline.core.rule_logging import rule_logging
from unet_pipeline.stages.augment import plot_samples, write_augmented_set

with rule_logging(snakemake):
    write_augmented_set(
        snakemake.input.volume,
        snakemake.input.weights,
        snakemake.output.augmented,
        snakemake.params.options,
        snakemake.params.geometry,
        snakemake.params.input_size,
        workers=snakemake.threads,
    )
    plot_samples(snakemake.output.augmented, snakemake.output.figure)
