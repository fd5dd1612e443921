"""Overlap-tile prediction (paper, Fig. 2): seamless probabilities for images of any size.

Output tiles lie on a regular grid; each input tile is its output tile plus the
network's context margin, read with mirrored context outside the image. Tiles
step by a multiple of the pooling period (``TileGeometry.tile_step``), so every
output pixel equals what a single pass over the whole mirror-padded image gives.
Training validation and the prediction stage both use ``predict_region``.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable

import numpy as np
import torch

from .augment import mirror_indices
from .tile_geometry import TileGeometry

Reader = Callable[[np.ndarray, np.ndarray], np.ndarray]


def mirrored_reader(section: np.ndarray) -> Reader:
    """Read an in-memory 2D section at any rows x cols, mirroring outside it."""
    height, width = section.shape

    def read(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return section[np.ix_(mirror_indices(rows, height), mirror_indices(cols, width))]

    return read


def normalise(tiles: np.ndarray, normalisation: dict) -> np.ndarray:
    """uint8 gray values to the network's input scale: (x / 255 - mean) / std."""
    return ((tiles.astype(np.float32) / 255.0 - normalisation["mean"]) / normalisation["std"]).astype(np.float32)


def _dihedral(batch: torch.Tensor, index: int, inverse: bool = False) -> torch.Tensor:
    """One of the 8 flips/rotations of square tiles (index 0 is the identity)."""
    turns, flip = index % 4, index >= 4
    if index == 0:
        return batch
    if inverse:
        batch = torch.rot90(batch, -turns, dims=(-2, -1))
        return torch.flip(batch, dims=(-1,)) if flip else batch
    batch = torch.flip(batch, dims=(-1,)) if flip else batch
    return torch.rot90(batch, turns, dims=(-2, -1))


@torch.no_grad()
def predict_tiles(model, tiles: np.ndarray, normalisation: dict, device, amp_dtype=None, tta: bool = False) -> np.ndarray:
    """Foreground probabilities (n, out, out) for a batch of uint8 input tiles (n, in, in)."""
    inputs = torch.from_numpy(normalise(tiles, normalisation)[:, None]).to(device)
    if device.type == "cuda":
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    transforms = range(8) if tta else range(1)
    total = None
    with autocast:
        for index in transforms:
            logits = model(_dihedral(inputs, index)).float()
            probability = _dihedral(torch.softmax(logits, dim=1)[:, 1], index, inverse=True)
            total = probability if total is None else total + probability
    return (total / len(transforms)).cpu().numpy()


def predict_region(
    model,
    read: Reader,
    region: tuple[int, int, int, int],
    geometry: TileGeometry,
    input_size: int,
    normalisation: dict,
    device,
    batch_size: int = 4,
    amp_dtype=None,
    tta: bool = False,
) -> np.ndarray:
    """Foreground probabilities of ``region = (top, bottom, left, right)`` of an image, float32.

    ``top`` and ``left`` must be multiples of the pooling period for the result
    to match a single pass exactly (block and section origins are).
    """
    top, bottom, left, right = region
    output_size = geometry.output_size(input_size)
    margin = (input_size - output_size) // 2
    step = geometry.tile_step(input_size)
    result = np.empty((bottom - top, right - left), np.float32)
    origins = [(y, x) for y in range(top, bottom, step) for x in range(left, right, step)]
    offsets = np.arange(input_size)
    for start in range(0, len(origins), batch_size):
        batch = origins[start : start + batch_size]
        tiles = np.stack([read(y - margin + offsets, x - margin + offsets) for y, x in batch])
        probabilities = predict_tiles(model, tiles, normalisation, device, amp_dtype, tta)
        for (y, x), probability in zip(batch, probabilities):
            height, width = min(step, bottom - y), min(step, right - x)
            result[y - top : y - top + height, x - left : x - left + width] = probability[:height, :width]
    return result


def predict_section(model, section: np.ndarray, geometry: TileGeometry, input_size: int, normalisation: dict, device, **options) -> np.ndarray:
    """Foreground probabilities of a whole in-memory 2D section."""
    height, width = section.shape
    return predict_region(model, mirrored_reader(section), (0, height, 0, width), geometry, input_size, normalisation, device, **options)
