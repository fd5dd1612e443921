"""Checkpoint files: written atomically, loaded as weights only, matched to a run by its signature;
and the trained model a fine-tuning run starts from."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import torch

from ..core.atomic import atomic_file
from ..core.checksums import sha256_of_file
from ..core.errors import PipelineError
from ..models.unet import UNetConfig, load_model
from .options import TrainingOptions


def save_checkpoint_file(payload, path: Path) -> None:
    with atomic_file(path) as tmp:
        torch.save(payload, tmp)


def run_signature(model_config: UNetConfig, options: TrainingOptions, data_attrs: dict, start: dict | None) -> str:
    """What a checkpoint must match to be resumed: model, result-relevant options, tile size, data, start."""
    described = {
        "model": asdict(model_config),
        "options": {field: getattr(options, field) for field in TrainingOptions.RESULT_FIELDS},
        "input_size": data_attrs["input_size"],
        "data": {key: data_attrs[key] for key in ("seed", "samples", "source", "augmentation")},
    }
    if start is not None:  # fine-tuning: which weights it started from (absent otherwise: old signatures hold)
        described["init_from"] = start["sha256"]
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


NETWORK_FIELDS = ("architecture", "in_channels", "classes", "levels", "base_channels", "padded", "norm")


def initial_weights(path, model_config: UNetConfig, input_size: int) -> tuple[dict, dict]:
    """Fine-tuning: the state dict of a trained model file and what to record of it.

    Raises:
        PipelineError: the file is missing or not a model, or its network or tile size is not this run's.
    """
    start, metadata = load_model(path)
    theirs = asdict(UNetConfig(**metadata["model"]))
    ours = asdict(model_config)
    if [theirs[key] for key in NETWORK_FIELDS] != [ours[key] for key in NETWORK_FIELDS] or (
        metadata["input_size"] != input_size
    ):
        describe = lambda config, size: ", ".join(f"{key} {config[key]}" for key in NETWORK_FIELDS) + f", tiles {size}"
        raise PipelineError(
            f"init_from {path}: its network ({describe(theirs, metadata['input_size'])}) is not the one trained "
            f"here ({describe(ours, input_size)}); fine-tuning needs the same network and tile size"
        )
    record = {"path": str(path), "sha256": sha256_of_file(path), "normalisation": metadata["normalisation"]}
    record |= {key: metadata.get("training", {}).get(key) for key in ("preset", "dataset")}
    return start.state_dict(), record


def load_checkpoint_file(path: Path) -> dict:
    """A checkpoint's payload, unpickled as weights only: a file from elsewhere cannot run code here.

    Raises:
        PipelineError: the file is not a checkpoint that loads so (truncated, or holding other objects).
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)  # RNG states stay on the CPU
    except Exception as error:  # torch raises UnpicklingError, RuntimeError or EOFError for such files
        raise PipelineError(
            f"{path}: not a training checkpoint that loads as weights only ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); delete it to train again"
        ) from error
