"""Where the network runs: CUDA when present, else the CPU; mixed-precision types."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from .errors import PipelineError

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(name: str) -> torch.device:
    """CUDA when asked for or available ('auto'), else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PipelineError(f"device {name!r} requested but no CUDA device is available")
    return torch.device(name)


def amp_dtype(name: str, device: torch.device):
    """The autocast dtype for ``name`` on ``device`` (None on the CPU: float32 throughout)."""
    return AMP_DTYPES[name] if device.type == "cuda" else None


def autocast(device: torch.device, dtype):
    """The mixed-precision context for ``dtype`` from ``amp_dtype`` (None: full float32, no autocast)."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
