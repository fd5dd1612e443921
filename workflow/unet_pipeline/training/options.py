"""The optimisation settings of a training run (a preset's ``training``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.defaults import defaults_from_schema


@dataclass(frozen=True)
@defaults_from_schema("$defs/preset/training")
class TrainingOptions:
    """How a network is trained (a preset's ``training``; defaults and meanings: the schema)."""

    iterations: int
    batch_size: int
    optimizer: str
    learning_rate: float
    momentum: float
    weight_decay: float
    schedule: str
    warmup: int
    online_augmentation: bool
    border_sampling: float
    validate_every: int
    log_every: int
    seed: int
    device: str
    amp: str
    channels_last: bool
    compile: bool
    validation_batch_size: int
    init_normalisation: str

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
        "border_sampling",
        "seed",
        "init_normalisation",
    )
