"""A network as ONNX (PyTorch's torch.export-based exporter) and its check against PyTorch with ONNX Runtime.

Used by the export stage (the packaged network, any tile) and by prediction on the CPU (the bare network, the
prediction's tile), which both refuse a file that does not compute what PyTorch computes.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from ..core.errors import PipelineError

OPSET = 18
TOLERANCE = 1e-4  # max |ONNX - PyTorch| on the check tile


def onnx_program(module: nn.Module, example: torch.Tensor, dynamic: dict):
    """``module`` exported for inputs like ``example``, the dimensions of ``dynamic`` (torch.export ``Dim``s)
    left free; the ONNXProgram (``.save(path)``, ``.model_proto``)."""
    with warnings.catch_warnings():
        # torch's exporter trips over its own deprecated pytree API (a FutureWarning, nothing to act on here)
        warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated", category=FutureWarning)
        return torch.onnx.export(
            module, (example,), dynamo=True, opset_version=OPSET, dynamic_shapes=(dynamic,), verbose=False
        )


def session_of(model, threads: int | None = None):
    """An ONNX Runtime CPU session of ``model`` (a path or the serialised bytes), on ``threads`` threads (None:
    ONNX Runtime's choice)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def checked_difference(session, module: nn.Module, example: np.ndarray, where, probabilities: bool = False) -> float:
    """The largest |ONNX Runtime - PyTorch| of ``module``'s output on ``example``; with ``probabilities``, of
    the softmax over the channels of both (a bare network's logits can be large, and float32 rounding with
    them; what prediction keeps is the probability).

    Raises:
        PipelineError: naming ``where`` when the shapes differ or the difference exceeds ``TOLERANCE``.
    """
    exported = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: example})[0])
    with torch.no_grad():
        reference = module(torch.from_numpy(example))
    if probabilities:
        exported, reference = torch.softmax(exported, dim=1), torch.softmax(reference, dim=1)
    same = exported.shape == reference.shape
    difference = float((exported - reference).abs().max()) if same else np.inf
    if difference > TOLERANCE:
        raise PipelineError(f"{where}: ONNX differs from PyTorch by {difference:.2e} (> {TOLERANCE}) on the test tile")
    return difference
