"""Rule train: the U-Net of a preset on the augmented set (see unet_pipeline.stages.train)."""

import _library_path  # noqa: F401 (makes unet_pipeline importable)
from unet_pipeline.core.rule_logging import rule_logging
from unet_pipeline.models.unet import UNetConfig
from unet_pipeline.stages.train import TrainingJob, train
from unet_pipeline.training.options import TrainingOptions

with rule_logging(snakemake):
    preset = snakemake.params.preset
    train(
        TrainingJob(
            augmented=snakemake.input.augmented,
            volume=snakemake.input.volume,
            outputs=dict(snakemake.output.items()),
            checkpoints=snakemake.params.checkpoints,
            model=UNetConfig(**{**preset["model"], "encoder_weights": snakemake.params.encoder_weights}),
            options=TrainingOptions(**preset["training"]),
            preset=snakemake.wildcards.preset,
            threads=snakemake.threads,
            processes=max(preset["gpus"], 1),
            init_from=snakemake.input.get("init_from"),
        )
    )
