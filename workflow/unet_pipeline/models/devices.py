"""Where the network runs: CUDA when present, else the CPU; mixed-precision types (chosen here only)."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch

from ..core.errors import PipelineError

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(name: str) -> torch.device:
    """CUDA when asked for or available ('auto'), else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PipelineError(f"device {name!r} requested but no CUDA device is available")
    return torch.device(name)


def cpu_has_bf16() -> bool:
    """Whether the CPU has bf16 instructions (avx512_bf16 or AMX, as ``lscpu`` lists them); False off Linux."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


def amp_dtype(name: str, device: torch.device, cpu: bool = False):
    """The autocast dtype for ``name`` on ``device``; None means float32 throughout.

    On CUDA, as named. On the CPU only where the caller allows it (``cpu``: training) and the CPU has bf16
    instructions: bf16 autocast trains the laptop network faster there (``benchmarks/README.md``, ``train_speed.py``).
    CPU predictions stay float32, so that they reproduce to 1e-5 whatever the tile size.
    """
    if device.type == "cuda":
        return AMP_DTYPES[name]
    return torch.bfloat16 if cpu and name == "bf16" and cpu_has_bf16() else None


def autocast(device: torch.device, dtype):
    """The mixed-precision context for ``dtype`` from ``amp_dtype`` (None: full float32, no autocast)."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
