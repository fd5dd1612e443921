"""Random initialisation of a network's convolutions, shared by every architecture.

N is the number of inputs of one unit: in_channels * k * k for a kxk
convolution, in_channels for a transposed convolution whose stride equals its
kernel (the U-Net's 2x2 up-convolution: its kernels do not overlap, so each
output pixel sees one input position per channel), and
in_channels * k * k / stride^2 for an overlapping transposed convolution
(TernausNet's 3x3 stride-2 one), the inputs an output pixel sees on average.

- ``he`` (U-Net paper, sect. 3): N(0, 2 / N).
- ``lecun_uniform`` (the random initialisation of TernausNet's comparison,
  Iglovikov & Shvets 2018, Fig. 3): U(-sqrt(3 / N), sqrt(3 / N)).

Biases start at zero in both.
"""

from __future__ import annotations

import math

from torch import nn

from ..core.errors import PipelineError

SCHEMES = ("he", "lecun_uniform")


def fan_in(module: nn.Module) -> float:
    """The inputs of one output unit of a (transposed) convolution."""
    kernel = module.kernel_size[0] * module.kernel_size[1]
    if isinstance(module, nn.ConvTranspose2d):
        return module.in_channels * kernel / (module.stride[0] * module.stride[1])
    return module.in_channels * kernel


def initialise(network: nn.Module, scheme: str) -> None:
    """Draw the weights of every convolution of ``network`` by ``scheme``; zero the biases.

    Args:
        network: any module; its ``Conv2d`` and ``ConvTranspose2d`` layers are initialised.
        scheme: ``he`` or ``lecun_uniform``.
    """
    if scheme not in SCHEMES:
        raise PipelineError(f"unknown initialisation {scheme!r}: use one of {', '.join(SCHEMES)}")
    for module in network.modules():
        if not isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            continue
        n = fan_in(module)
        if scheme == "he":
            nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / n))
        else:
            bound = math.sqrt(3.0 / n)
            nn.init.uniform_(module.weight, -bound, bound)
        nn.init.zeros_(module.bias)
