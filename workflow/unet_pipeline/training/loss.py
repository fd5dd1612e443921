"""The paper's loss (eq. 1): pixel-wise softmax cross-entropy weighted by the weight map."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """mean over pixels of w(x) * -log softmax(logits)(x)[label(x)] (paper, eq. 1).

    Args:
        logits: (n, classes, h, w), any float dtype (computed in float32).
        labels: (n, h, w) class indices, any integer dtype.
        weights: (n, h, w) float32 weight map.

    Returns:
        The scalar loss, on the logits' device.
    """
    # log_softmax and a gather give F.cross_entropy(reduction="none")'s values and gradients bit for bit
    # (tests/training/test_loss.py) in half its CPU time, which bounds the training loop's host side
    log_probability = F.log_softmax(logits.float(), dim=1).gather(1, labels.long().unsqueeze(1)).squeeze(1)
    return -(weights * log_probability).mean()
