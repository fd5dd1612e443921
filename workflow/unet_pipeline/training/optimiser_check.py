"""A preset's optimiser, as shipped, for a few dozen steps on real augmented tiles with the paper's weight maps.

A preset that diverges does so early: the paper network's unnormalised layers give a first loss of
30-60 (He initialisation, no normalisation layers), the weight maps multiply the gradient at cell
borders by up to 11, and SGD with momentum 0.99 keeps adding every gradient for about 100 steps
(its steady-state step is ``lr / (1 - momentum)``). With the old paper settings (SGD 0.01) the loss
was NaN within 25 steps on a GPU and within 5 on 204-px tiles here. ``tests/training/test_optimiser_check.py``
runs every shipped preset through ``losses``; ``benchmarks/preset_stability.py`` runs it longer and
at the presets' own tile sizes.
"""

from __future__ import annotations

import numpy as np
import torch

from ..models.devices import amp_dtype, pick_device
from ..models.unet import UNetConfig
from ..transforms.augmentation import generate_samples
from ..transforms.loss_weights import class_weights, weight_map
from ..transforms.normalisation import histogram, statistics
from .batches import DeviceBatches
from .optimisation import make_optimizer
from .options import TrainingOptions
from .trainer import Trainer, TrainingParts, prepared_model


def augmented_tiles(image: np.ndarray, labels: np.ndarray, tile: tuple[int, int], samples: int, options: dict):
    """Augmented (inputs, labels, weights) tiles of labelled sections, in memory, and their normalisation.

    Args:
        image: (z, y, x) uint8 sections.
        labels: (z, y, x) binary labels, nonzero = cell.
        tile: (input_size, output_size) of the network.
        samples: how many tiles.
        options: the augmentation settings (``config.yaml``, ``augmentation``) with ``seed``.

    Returns:
        ((inputs, labels, weights), normalisation): the arrays as the augment stage writes them, with the
        paper's weight maps (the schema's w0 and sigma, class balance of these sections), and the sections'
        mean/std.
    """
    cells = (labels > 0).astype(np.uint8)
    balance = class_weights(float(cells.mean()))
    weights = np.stack([weight_map(section, balance) for section in cells])
    block = generate_samples((image, cells, weights), range(samples), options, list(range(len(image))), tile)
    return (block["inputs"], block["labels"], block["weights"]), statistics(histogram(image))


def preset_trainer(preset: dict, arrays, normalisation: dict, folder, device: str = "cpu") -> Trainer:
    """A ``Trainer`` of ``preset``'s network and options on in-memory tiles (``augmented_tiles``), on ``device``.

    The options are the preset's (learning rate, momentum, schedule over its ``iterations``, amp,
    channels_last, compile on a GPU); the encoder starts from random weights; checkpoints go to ``folder``.
    """
    device = pick_device(device)
    options = TrainingOptions(**preset.get("training", {}) | {"device": str(device)})
    torch.manual_seed(options.seed)
    model = prepared_model(UNetConfig(**preset["model"] | {"encoder_weights": None}), options, device)
    batches = DeviceBatches(arrays, options, normalisation, device)
    precision = amp_dtype(options.amp, device, cpu=True)
    parts = TrainingParts(model, make_optimizer(model, options), batches, device, precision)
    return Trainer(parts, options, folder, signature="optimiser check")


def losses(preset: dict, arrays, normalisation: dict, steps: int, folder) -> list[float]:
    """The loss of each of ``steps`` training steps of ``preset`` on the CPU (``preset_trainer``), as the train
    rule runs them. Stops at the first non-finite loss (its value is last)."""
    trainer = preset_trainer(preset, arrays, normalisation, folder)
    trainer.model.train()
    found = []
    for _ in range(steps):
        found.append(trainer.train_step().item())
        if not np.isfinite(found[-1]):
            break
    return found


def verdict(found: list[float], steps: int, window: int = 10) -> str | None:
    """Why a loss curve fails the check, or None: a non-finite loss, or a median of the last ``window`` losses
    above that of the first ``window`` (batch-1 losses are noisy; medians ignore single spikes)."""
    if len(found) < steps or not np.all(np.isfinite(found)):
        return f"loss {found[-1]} at step {len(found) - 1}"
    first, last = float(np.median(found[:window])), float(np.median(found[-window:]))
    if last > first:
        return f"loss rose: median {first:.4g} over steps 0-{window - 1}, {last:.4g} over the last {window}"
    return None
