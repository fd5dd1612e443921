"""TernausNet (Iglovikov & Shvets 2018): a U-Net whose encoder is VGG11, optionally ImageNet-initialised.

Encoder: the eight 3x3 convolutions of VGG11 (64, 128, 256, 256, 512, 512, 512,
512 channels; padded) with five 2x2 poolings, so inputs must be divisible by 32
and outputs have the input's size. Decoder: per level a 3x3 convolution and a
stride-2 3x3 transposed convolution, each followed by ReLU, concatenated with
the encoder map of the same size; ``base_channels`` (32 in the paper) sets its
width. Random weights follow ``config.init`` (``initialisation``). The encoder
can start from torchvision's ImageNet VGG11 weights (the state dict file
``vgg11-8a719046.pth``), which the pipeline's download stage fetches for
``encoder_weights: imagenet``, or from a local file; a file name carrying a
sha256 prefix (torchvision's convention) is verified against it. For gray-value
input the pretrained first-layer kernels are summed over the RGB channels, which
keeps the response to a gray image unchanged.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..core.checksums import hash_prefix_in_name, verify_sha256
from ..core.errors import PipelineError
from .initialisation import initialise

# (in, out) channels of VGG11's convolutions and their indices in torchvision's vgg11().features
VGG11_CONVOLUTIONS = [
    (3, 64, 0),
    (64, 128, 3),
    (128, 256, 6),
    (256, 256, 8),
    (256, 512, 11),
    (512, 512, 13),
    (512, 512, 16),
    (512, 512, 18),
]


def _conv_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True))


class _DecoderBlock(nn.Sequential):
    def __init__(self, in_channels: int, middle_channels: int, out_channels: int):
        super().__init__(
            _conv_relu(in_channels, middle_channels),
            nn.ConvTranspose2d(middle_channels, out_channels, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(inplace=True),
        )


class TernausNet(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        f = config.base_channels
        first_in = config.in_channels
        self.encoder = nn.ModuleList(
            _conv_relu(first_in if index == 0 else cin, cout) for index, (cin, cout, _) in enumerate(VGG11_CONVOLUTIONS)
        )
        self.pool = nn.MaxPool2d(2, 2)
        self.center = _DecoderBlock(512, f * 16, f * 8)
        self.dec5 = _DecoderBlock(512 + f * 8, f * 16, f * 8)
        self.dec4 = _DecoderBlock(512 + f * 8, f * 16, f * 4)
        self.dec3 = _DecoderBlock(256 + f * 4, f * 8, f * 2)
        self.dec2 = _DecoderBlock(128 + f * 2, f * 4, f)
        self.dec1 = _conv_relu(64 + f, f)
        self.head = nn.Conv2d(f, config.classes, 1)
        initialise(self, config.init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.encoder
        conv1 = e[0](x)
        conv2 = e[1](self.pool(conv1))
        conv3 = e[3](e[2](self.pool(conv2)))
        conv4 = e[5](e[4](self.pool(conv3)))
        conv5 = e[7](e[6](self.pool(conv4)))
        center = self.center(self.pool(conv5))
        dec5 = self.dec5(torch.cat([center, conv5], 1))
        dec4 = self.dec4(torch.cat([dec5, conv4], 1))
        dec3 = self.dec3(torch.cat([dec4, conv3], 1))
        dec2 = self.dec2(torch.cat([dec3, conv2], 1))
        return self.head(self.dec1(torch.cat([dec2, conv1], 1)))

    def load_vgg11(self, path) -> None:
        """Initialise the encoder from a torchvision VGG11 state dict file; clear errors otherwise."""
        path = Path(path)
        if not path.is_file():
            raise PipelineError(
                f"{path}: VGG11 weights file not found "
                "(set encoder_weights to imagenet or to torchvision's vgg11-8a719046.pth)"
            )
        prefix = hash_prefix_in_name(path)
        if prefix:
            verify_sha256(path, prefix, f"{path} (its name carries the sha256 prefix {prefix})")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise PipelineError(f"{path}: not a readable PyTorch state dict: {error}") from error
        for block, (cin, cout, index) in zip(self.encoder, VGG11_CONVOLUTIONS):
            weight, bias = state.get(f"features.{index}.weight"), state.get(f"features.{index}.bias")
            if weight is None or bias is None:
                raise PipelineError(f"{path}: no features.{index}.weight/bias; not a torchvision VGG11 state dict")
            if tuple(weight.shape) != (cout, cin, 3, 3) or tuple(bias.shape) != (cout,):
                raise PipelineError(
                    f"{path}: features.{index}.weight has shape {tuple(weight.shape)}, VGG11 has {(cout, cin, 3, 3)}"
                )
            conv = block[0]
            if index == 0 and conv.in_channels != cin:
                weight = weight.sum(dim=1, keepdim=True).repeat(1, conv.in_channels, 1, 1) / conv.in_channels
            with torch.no_grad():
                conv.weight.copy_(weight)
                conv.bias.copy_(bias)
