"""The network run by ONNX Runtime for prediction on the CPU, where it is about twice as fast as PyTorch's
float32 (benchmarks/cpu_runtimes.py), within ``models.onnx_export.TOLERANCE`` of PyTorch's output."""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from torch import nn

from ..core.errors import PipelineError
from ..models.onnx_export import checked_difference, onnx_program, session_of

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "onnxruntime")


def resolved_runtime(runtime: str, device: torch.device) -> str:
    """``prediction.runtime`` for a job on ``device``: auto is ONNX Runtime on the CPU and PyTorch on a GPU.

    Raises:
        PipelineError: an unknown runtime, or ONNX Runtime asked for on a GPU (this pipeline runs it on the CPU).
    """
    if runtime not in RUNTIMES:
        raise PipelineError(f"prediction.runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
    if runtime == "auto":
        return "onnxruntime" if device.type == "cpu" else "torch"
    if runtime == "onnxruntime" and device.type != "cpu":
        raise PipelineError(f"prediction.runtime onnxruntime runs on the CPU, not on {device}: use auto or torch")
    return runtime


class OnnxNetwork(nn.Module):
    """A network exported for one tile size (any batch), called as the network is: (n, c, size, size) float32
    CPU tensor in, logits out."""

    def __init__(self, session):
        super().__init__()
        self.session, self.name = session, session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {self.name: x.detach().contiguous().numpy()})[0])


def onnx_network(model: nn.Module, input_size: int, threads: int, where) -> OnnxNetwork:
    """``model`` (eval mode, CPU) exported for ``input_size`` tiles and any batch, run by ONNX Runtime on
    ``threads`` threads; checked against PyTorch on a random tile before use (its class probabilities).

    Raises:
        PipelineError: naming ``where`` (the model file) when ONNX Runtime's output differs from PyTorch's.
    """
    started = time.perf_counter()
    channels = model.config.in_channels
    example = torch.randn(2, channels, input_size, input_size, generator=torch.Generator().manual_seed(0))
    program = onnx_program(model, example, {0: torch.export.Dim("batch", min=1, max=1024)})
    session = session_of(program.model_proto.SerializeToString(), threads)
    difference = checked_difference(session, model, example.numpy().astype(np.float32), where, probabilities=True)
    log.info(
        "ONNX Runtime predicts %d-px tiles (export and check %.1f s, max probability |ONNX - PyTorch| %.1e)",
        input_size,
        time.perf_counter() - started,
        difference,
    )
    return OnnxNetwork(session)
