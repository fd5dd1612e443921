"""The optimiser of a training run and its learning-rate schedule."""

from __future__ import annotations

import math

import torch

from ..core.errors import PipelineError
from .options import TrainingOptions


def learning_rate(options: TrainingOptions, step: int) -> float:
    """The learning rate at ``step``: linear warm-up, then constant, polynomial or cosine decay."""
    if step < options.warmup:
        return options.learning_rate * (step + 1) / options.warmup
    progress = (step - options.warmup) / max(options.iterations - options.warmup, 1)
    if options.schedule == "poly":
        return options.learning_rate * (1.0 - progress) ** 0.9
    if options.schedule == "cosine":
        return options.learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))
    return options.learning_rate


def make_optimizer(model, options: TrainingOptions) -> torch.optim.Optimizer:
    if options.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=options.learning_rate, momentum=options.momentum, weight_decay=options.weight_decay
        )
    if options.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=options.learning_rate, weight_decay=options.weight_decay)
    raise PipelineError(f"unknown optimizer {options.optimizer!r}: use sgd or adam")
