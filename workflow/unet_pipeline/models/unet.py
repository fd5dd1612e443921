"""The U-Net of Ronneberger et al. (2015), and how to build, save and load a trained network.

Architecture (paper, sect. 2 and Fig. 1): per level two 3x3 convolutions, each
followed by ReLU, unpadded by default; 2x2 max-pooling with stride 2 between
levels; channels doubling from ``base_channels`` (64) to 1024 at the bottom;
2x2 up-convolutions that halve the channels; the encoder map of the same level
centre-cropped and concatenated; a final 1x1 convolution to the classes. With 5
levels that is 23 convolutional layers and, for 1 input channel and 2 classes,
31,030,658 parameters; a 572x572 tile maps to 388x388.

Dropout "at the end of the contracting path": after the deepest encoder level
and after the bottom block, as in the authors' Caffe model.

Initialisation (sect. 3): weights drawn from a Gaussian with standard deviation
sqrt(2/N), N the number of inputs of one unit (``initialisation``); LeCun uniform
is the alternative that TernausNet's comparison uses.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ..core.atomic import atomic_file
from ..core.defaults import defaults_from_schema
from ..core.errors import PipelineError
from .initialisation import initialise
from .tile_geometry import TileGeometry, geometry_of

MODEL_FORMAT = "unet-pipeline-model/1"


@dataclass(frozen=True)
@defaults_from_schema("$defs/preset/model")
class UNetConfig:
    """Everything needed to rebuild the network (stored with every trained model): a preset's ``model``
    (defaults and meanings: the schema), and the channels in and out, which the pipeline fixes."""

    architecture: str
    levels: int
    base_channels: int
    padded: bool
    dropout: float
    norm: str
    encoder_weights: str | None
    init: str
    in_channels: int = 1  # gray-value images
    classes: int = 2  # background (membrane), foreground (cell)

    @property
    def geometry(self) -> TileGeometry:
        return geometry_of(asdict(self))


GROUP_CHANNELS = 8  # channels per group of ``norm: group`` (fewer groups where a level has fewer channels)


def _norm(kind: str, channels: int) -> list[nn.Module]:
    """The normalisation after a convolution, as a list of layers: none adds none (so a network without
    keeps the paper's layer indices, and the weights saved before the option existed load); batch (running
    statistics in eval mode, so that a prediction does not depend on the tile); instance (nnU-Net's) or group,
    which normalise each tile by its own statistics, in training and prediction alike."""
    if kind == "none":
        return []
    if kind == "instance":
        return [nn.InstanceNorm2d(channels, affine=True)]
    if kind == "group":
        return [nn.GroupNorm(max(channels // GROUP_CHANNELS, 1), channels)]
    if kind == "batch":
        return [nn.BatchNorm2d(channels)]
    raise PipelineError(f"unknown norm {kind!r}: use none, batch, instance or group")


def _conv_block(in_channels: int, out_channels: int, padded: bool, norm: str = "none") -> nn.Sequential:
    padding = 1 if padded else 0
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=padding),
        *_norm(norm, out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=padding),
        *_norm(norm, out_channels),
        nn.ReLU(inplace=True),
    )


def center_crop(tensor: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The central ``height`` x ``width`` part of an (n, c, h, w) tensor.

    Cropped by a negative pad, not by slicing: given its share of the concatenation's gradient, slicing's
    backward returns the skip's gradient in the default memory format, and in a channels_last network the
    ReLU backward that meets it then runs PyTorch's slow strided kernel; pad's backward keeps the memory
    format (benchmarks/README.md, "The skip crop's memory layout")."""
    top, bottom = _margins(tensor.shape[-2] - height)
    left, right = _margins(tensor.shape[-1] - width)
    return F.pad(tensor, (-left, -right, -top, -bottom))


def _margins(excess: int) -> tuple[int, int]:
    """How much a centre crop removes before and after, the odd pixel after."""
    return excess // 2, excess - excess // 2


class UNet(nn.Module):
    def __init__(self, config: UNetConfig = UNetConfig()):
        super().__init__()
        if config.architecture != "unet":
            raise PipelineError(f"UNet cannot build architecture {config.architecture!r}")
        self.config = config
        widths = [config.base_channels * 2**level for level in range(config.levels)]
        self.encoder = nn.ModuleList()
        channels = config.in_channels
        for width in widths[:-1]:
            self.encoder.append(_conv_block(channels, width, config.padded, config.norm))
            channels = width
        self.pool = nn.MaxPool2d(2, 2)
        self.dropout = nn.Dropout2d(config.dropout) if config.dropout > 0 else nn.Identity()
        self.bottom = _conv_block(channels, widths[-1], config.padded, config.norm)
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(2 * width, width, 2, stride=2))
            self.decoder.append(_conv_block(2 * width, width, config.padded, config.norm))
        self.head = nn.Conv2d(widths[0], config.classes, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random weights by ``config.init`` (the paper's He initialisation by default); zero biases."""
        initialise(self, self.config.init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, block in enumerate(self.encoder):
            x = block(x)
            if level == len(self.encoder) - 1:
                x = self.dropout(x)
            skips.append(x)
            x = self.pool(x)
        x = self.dropout(self.bottom(x))
        for up, block, skip in zip(self.up, self.decoder, reversed(skips)):
            x = up(x)
            x = block(torch.cat([center_crop(skip, x.shape[-2], x.shape[-1]), x], dim=1))
        return self.head(x)


def build_model(config: UNetConfig, load_encoder: bool = True) -> nn.Module:
    """The network of ``config.architecture`` (unet or ternausnet).

    ``load_encoder`` initialises a TernausNet encoder from ``encoder_weights``;
    loading a trained model skips it, the state dict holding every weight.
    """
    if config.architecture == "unet":
        return UNet(config)
    if config.architecture == "ternausnet":
        from .ternausnet import TernausNet

        network = TernausNet(config)
        if load_encoder and config.encoder_weights:
            network.load_vgg11(config.encoder_weights)
        return network
    raise PipelineError(f"unknown architecture {config.architecture!r}: use unet or ternausnet")


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def save_model(model: nn.Module, path, metadata: dict) -> None:
    """Write the weights and the metadata (architecture, tiles, normalisation, data) as one file, atomically.

    The metadata also goes, as JSON, beside the file by the caller; the .pt file
    alone is enough to rebuild and run the network.
    """
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    # pickle writes a string seen before as a reference to the same object, so equal metadata could be saved as
    # different bytes depending on where its strings came from (a literal, or a resumed checkpoint's unpickled
    # keys); decoded from JSON (its keys memoised by value) the bytes depend on the content alone
    metadata = json.loads(json.dumps(metadata))
    with atomic_file(path) as tmp:
        torch.save({"format": MODEL_FORMAT, "metadata": metadata, "state_dict": state}, tmp)


def load_model(path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a trained network from its file; clear errors for missing or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: model file not found")
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:
        raise PipelineError(f"{path}: not a readable model file: {error}") from error
    if not isinstance(saved, dict) or saved.get("format") != MODEL_FORMAT:
        found = saved.get("format") if isinstance(saved, dict) else type(saved).__name__
        raise PipelineError(f"{path}: model format {found!r} is not {MODEL_FORMAT!r}; retrain or convert the model")
    metadata = saved["metadata"]
    model = build_model(UNetConfig(**metadata["model"]), load_encoder=False)
    model.load_state_dict(saved["state_dict"])
    return model.to(device).eval(), metadata
