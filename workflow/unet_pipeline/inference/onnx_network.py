"""The network run by ONNX Runtime for prediction on the CPU, where it is about twice as fast as PyTorch's
float32 (benchmarks/cpu_runtimes.py), within ``models.onnx_export.TOLERANCE`` of PyTorch's output."""

from __future__ import annotations

import logging
import time

import torch
from torch import nn

from ..core.errors import PipelineError
from ..models.onnx_export import any_tile, checked_difference, onnx_program, session_of

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
    """A network exported for any batch and tile, called as the network is: (n, c, y, x) float32 CPU tensor in,
    logits out. ``reference`` is the PyTorch network it was exported from, against which ``checked`` compares."""

    runtime = "onnxruntime"

    def __init__(self, session, reference: nn.Module):
        super().__init__()
        self.session, self.name, self.reference = session, session.get_inputs()[0].name, reference
        self.checked_sizes: set[int] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {self.name: x.detach().contiguous().numpy()})[0])

    def checked(self, input_size: int, where) -> None:
        """Compare with PyTorch on two random tiles of ``input_size`` (class probabilities), once per size.

        Raises:
            PipelineError: naming ``where`` (the model file) when ONNX Runtime's output differs from PyTorch's.
        """
        if input_size in self.checked_sizes:
            return
        channels = self.reference.config.in_channels
        example = torch.randn(2, channels, input_size, input_size, generator=torch.Generator().manual_seed(0))
        difference = checked_difference(self.session, self.reference, example.numpy(), where, probabilities=True)
        self.checked_sizes.add(input_size)
        log.info("ONNX Runtime on %d-px tiles: max probability |ONNX - PyTorch| %.1e", input_size, difference)


def onnx_network(model: nn.Module, threads: int, where, check_size: int) -> OnnxNetwork:
    """``model`` (eval mode, CPU) exported once for any batch and tile, so that the tile choice measures the
    runtime that predicts; run by ONNX Runtime on ``threads`` threads and checked at ``check_size`` before use.

    Raises:
        PipelineError: naming ``where`` (the model file) when ONNX Runtime's output differs from PyTorch's.
    """
    started = time.perf_counter()
    channels = model.config.in_channels
    example = torch.randn(2, channels, check_size, check_size, generator=torch.Generator().manual_seed(0))
    network = OnnxNetwork(
        session_of(onnx_program(model, example, any_tile()).model_proto.SerializeToString(), threads), model
    )
    network.checked(check_size, where)
    log.info("ONNX Runtime network exported for any tile in %.1f s", time.perf_counter() - started)
    return network
