"""The paper's loss (eq. 1): pixel-wise softmax cross-entropy weighted by the weight map."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """mean over pixels of w(x) * -log softmax(logits)(x)[label(x)] (paper, eq. 1)."""
    return (weights * F.cross_entropy(logits.float(), labels.long(), reduction="none")).mean()
