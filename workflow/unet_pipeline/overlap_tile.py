"""Overlap-tile prediction (paper, Fig. 2): seamless probabilities for images of any size.

Output tiles lie on a regular grid; each input tile is its output tile plus the
network's context margin, read with mirrored context outside the image. Tiles
step by a multiple of the pooling period (``TileGeometry.tile_step``), so every
output pixel equals what a single pass over the whole mirror-padded image gives.
Training validation and the prediction stage both use ``predict_region``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .devices import autocast
from .mirror import mirror_indices
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
def predict_tiles(
    model, tiles: np.ndarray, normalisation: dict, device, amp_dtype=None, tta: bool = False
) -> np.ndarray:
    """Foreground probabilities (n, out, out) for a batch of uint8 input tiles (n, in, in)."""
    inputs = torch.from_numpy(normalise(tiles, normalisation)[:, None]).to(device)
    if device.type == "cuda":
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    transforms = range(8) if tta else range(1)
    total = None
    with autocast(device, amp_dtype):
        for index in transforms:
            logits = model(_dihedral(inputs, index)).float()
            probability = _dihedral(torch.softmax(logits, dim=1)[:, 1], index, inverse=True)
            total = probability if total is None else total + probability
    return (total / len(transforms)).cpu().numpy()


def blend_overlap(input_size: int) -> int:
    """Pixels that neighbouring tiles of a padded network share (a quarter of the tile)."""
    return input_size // 4


def input_origins(start: int, stop: int, geometry: TileGeometry, input_size: int) -> list[int]:
    """First input pixel of every tile along one axis covering output pixels [start, stop).

    Unpadded networks: output tiles on a grid of ``tile_step`` from ``start``, each
    input tile reaching ``margin`` before its output tile. Padded networks (no
    valid-convolution margin): tiles overlapping by ``blend_overlap`` on one grid
    fixed in image coordinates (origins ``k * (input_size - overlap) - overlap // 2``,
    so no image edge falls on a tile's outer edge, where zero padding degrades the
    prediction), and every tile of that grid that touches [start, stop): each pixel
    is then the blend of the same tiles whatever block it is predicted in.
    """
    if not geometry.padded:
        margin = geometry.margin(input_size)
        return [origin - margin for origin in range(start, stop, geometry.tile_step(input_size))]
    overlap = blend_overlap(input_size)
    step = input_size - overlap
    first = (start + overlap // 2 - input_size) // step + 1  # the first k whose tile ends after start
    last = (stop + overlap // 2 - 1) // step  # the last k whose tile begins before stop
    return [k * step - overlap // 2 for k in range(first, last + 1)]


def _blend_window(size: int) -> np.ndarray:
    """Separable weights falling smoothly to (almost) zero at the tile edges."""
    ramp = np.sin(np.pi * (np.arange(size) + 0.5) / size) ** 2
    return np.outer(ramp, ramp).astype(np.float32)


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

    Unpadded networks (the paper's): the overlap-tile strategy; each output pixel
    comes from exactly one tile, and the result matches a single pass over the
    whole image when ``top`` and ``left`` are multiples of the pooling period
    (block and section origins are). Padded networks (TernausNet): overlapping
    tiles averaged with a smooth window, which hides the weaker predictions near
    each tile's zero-padded edges.
    """
    top, bottom, left, right = region
    rows, cols = input_origins(top, bottom, geometry, input_size), input_origins(left, right, geometry, input_size)
    origins = [(y, x) for y in rows for x in cols]
    offsets = np.arange(input_size)
    if geometry.padded:
        window = _blend_window(input_size)
        shape = (rows[-1] + input_size - rows[0], cols[-1] + input_size - cols[0])
        total, weight = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    else:
        margin, step = geometry.margin(input_size), geometry.tile_step(input_size)
        result = np.empty((bottom - top, right - left), np.float32)
    for start in range(0, len(origins), batch_size):
        batch = origins[start : start + batch_size]
        tiles = np.stack([read(y + offsets, x + offsets) for y, x in batch])
        probabilities = predict_tiles(model, tiles, normalisation, device, amp_dtype, tta)
        for (y, x), probability in zip(batch, probabilities):
            if geometry.padded:
                place = (slice(y - rows[0], y - rows[0] + input_size), slice(x - cols[0], x - cols[0] + input_size))
                total[place] += probability * window
                weight[place] += window
            else:
                y, x = y + margin, x + margin
                height, width = min(step, bottom - y), min(step, right - x)
                result[y - top : y - top + height, x - left : x - left + width] = probability[:height, :width]
    if geometry.padded:
        return (total / weight)[top - rows[0] : bottom - rows[0], left - cols[0] : right - cols[0]]
    return result


def input_extent(
    region: tuple[int, int, int, int], geometry: TileGeometry, input_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The input rows and columns that ``predict_region`` reads for ``region``."""
    top, bottom, left, right = region
    rows, cols = input_origins(top, bottom, geometry, input_size), input_origins(left, right, geometry, input_size)
    return np.arange(rows[0], rows[-1] + input_size), np.arange(cols[0], cols[-1] + input_size)


def predict_section(
    model, section: np.ndarray, geometry: TileGeometry, input_size: int, normalisation: dict, device, **options
) -> np.ndarray:
    """Foreground probabilities of a whole in-memory 2D section."""
    height, width = section.shape
    return predict_region(
        model, mirrored_reader(section), (0, height, 0, width), geometry, input_size, normalisation, device, **options
    )
