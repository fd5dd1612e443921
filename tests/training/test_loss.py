"""The weighted loss against PyTorch's cross-entropy, bit for bit, values and gradients."""

import pytest
import torch
import torch.nn.functional as F
from unet_pipeline.training.loss import weighted_cross_entropy


def reference(logits, labels, weights):
    return (weights * F.cross_entropy(logits.float(), labels.long(), reduction="none")).mean()


@pytest.mark.parametrize(
    "shape, classes, dtype",
    [((1, 388, 388), 2, torch.bfloat16), ((4, 100, 100), 2, torch.float32), ((2, 36, 20), 3, torch.float32)],
)
def test_equals_weighted_cross_entropy_bit_for_bit(shape, classes, dtype):
    generator = torch.Generator().manual_seed(0)
    n, h, w = shape
    base = (4 * torch.randn(n, classes, h, w, generator=generator)).to(dtype)
    labels = torch.randint(0, classes, shape, generator=generator, dtype=torch.uint8)
    weights = 1 + 10 * torch.rand(shape, generator=generator)
    results = []
    for loss in (reference, weighted_cross_entropy):
        logits = base.clone().requires_grad_()
        value = loss(logits, labels, weights)
        value.backward()
        results.append((value.detach(), logits.grad))
    (expected, expected_grad), (value, grad) = results
    assert torch.equal(value, expected) and torch.equal(grad, expected_grad)
    assert value.dtype == torch.float32 and grad.dtype == dtype
