"""Rule train: the U-Net of a preset on the augmented set (see unet_pipeline.train)."""

import _library_path  # noqa: F401 (makes unet_pipeline importable)
from unet_pipeline.rule_logging import rule_logging
from unet_pipeline.train import TrainingOptions, train
from unet_pipeline.unet import UNetConfig

with rule_logging(snakemake):
    preset = snakemake.params.preset
    train(
        snakemake.input.augmented,
        snakemake.input.volume,
        dict(snakemake.output.items()),
        snakemake.params.checkpoints,
        UNetConfig(**{**preset["model"], "encoder_weights": snakemake.params.encoder_weights}),
        TrainingOptions(**preset["training"]),
        threads=snakemake.threads,
        preset=snakemake.wildcards.preset,
    )
