"""The optimisation settings of a training run (a preset's ``training``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainingOptions:
    iterations: int
    batch_size: int = 1
    optimizer: str = "sgd"
    learning_rate: float = 0.001
    momentum: float = 0.99
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup: int = 0
    online_augmentation: bool = True
    validate_every: int = 500
    log_every: int = 50
    seed: int = 0
    device: str = "auto"
    amp: str = "bf16"
    channels_last: bool = True
    compile: bool = False
    validation_batch_size: int = 4

    # settings that change the result; the rest (logging, device, speed) may change on resume
    RESULT_FIELDS = (
        "batch_size",
        "optimizer",
        "learning_rate",
        "momentum",
        "weight_decay",
        "schedule",
        "warmup",
        "online_augmentation",
        "seed",
    )
