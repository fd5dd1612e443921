"""Overlap-tile prediction (paper, Fig. 2): seamless probabilities for images of any size.

Output tiles lie on a regular grid; each input tile is its output tile plus the
network's context margin, read with mirrored context outside the image. Tiles
step by a multiple of the pooling period (``TileGeometry.tile_step``), so every
output pixel equals what a single pass over the whole mirror-padded image gives.
A ``TilePredictor`` holds the network and its tile settings once; training
validation and the prediction stage both use it.

Conventions: sections and regions are 2D (y, x); a region is ``(top, bottom,
left, right)`` in image pixels, bottom and right exclusive; input tiles are
uint8 gray values, outputs float32 foreground (cell interior) probabilities.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..data.mirror import mirror_indices
from ..models.devices import autocast
from ..models.tile_geometry import TileGeometry

Reader = Callable[[np.ndarray, np.ndarray], np.ndarray]
Region = tuple[int, int, int, int]


def mirrored_reader(section: np.ndarray) -> Reader:
    """Read an in-memory 2D section at any rows x cols, mirroring outside it."""
    height, width = section.shape

    def read(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return section[np.ix_(mirror_indices(rows, height), mirror_indices(cols, width))]

    return read


def _scaled(values, normalisation: dict):
    """The network's input scale of float32 gray values (numpy or torch): (x / 255 - mean) / std."""
    return (values / 255.0 - normalisation["mean"]) / normalisation["std"]


def normalise(tiles: np.ndarray, normalisation: dict) -> np.ndarray:
    """uint8 gray values to the network's input scale, float32."""
    return _scaled(tiles.astype(np.float32), normalisation).astype(np.float32)


def scaled_input(tiles: torch.Tensor, normalisation: dict, channels_last: bool) -> torch.Tensor:
    """The network's input batch (n, 1, in, in) float32 of uint8 tiles (n, in, in) already on their device.

    On the CPU this is ``normalise`` bit for bit (float32 division and subtraction round alike in NumPy and
    torch; ``tests/training/test_batches.py``).
    """
    inputs = _scaled(tiles[:, None].float(), normalisation)
    return inputs.contiguous(memory_format=torch.channels_last) if channels_last else inputs


def network_input(tiles: np.ndarray, normalisation: dict, device: torch.device, channels_last: bool) -> torch.Tensor:
    """The network's input batch (n, 1, in, in) of uint8 tiles (n, in, in), on ``device``.

    A GPU receives the uint8 tiles (a quarter of float32's bytes) and normalises them itself, so the host does
    not compute while the GPU waits (``benchmarks/profile_stage.py``); on the CPU, ``normalise`` (bit for bit
    what it always was). Prediction builds its batches here, training in ``batches``.
    """
    if device.type == "cuda":
        return scaled_input(torch.from_numpy(tiles).to(device), normalisation, channels_last)
    inputs = torch.from_numpy(normalise(tiles, normalisation)[:, None])
    return inputs.contiguous(memory_format=torch.channels_last) if channels_last else inputs


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


def _average(views) -> torch.Tensor:
    """The mean of the views' probabilities, summed in their order (the host and device paths round alike)."""
    total, count = None, 0
    for probability in views:
        total, count = (probability if total is None else total + probability), count + 1
    return total / count


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


@dataclass(frozen=True, eq=False)
class TilePredictor:
    """A network and everything overlap-tile prediction needs, set once (nnU-Net's predictor object).

    Attributes:
        model: the network in eval mode, on ``device``.
        geometry: its tile geometry (``TileGeometry``).
        input_size: input tile size in pixels (any size legal for ``geometry``).
        normalisation: ``{"mean", "std"}`` of the training gray values scaled to [0, 1].
        device: where the network runs.
        amp_dtype: autocast dtype (``devices.amp_dtype``), None for float32.
        batch_size: tiles per forward pass; on the device path, network inputs per pass, which with ``tta``
            are the views of consecutive tiles (8 or more put each tile's 8 views in one pass).
        tta: average the 8 flips and rotations of every tile.
        on_device: cut, normalise, turn and stitch the tiles of a region on ``device`` (``region_tensor``);
            None: on CUDA only, so that CPU predictions stay bit for bit what the host path computes.
    """

    model: torch.nn.Module
    geometry: TileGeometry
    input_size: int
    normalisation: dict
    device: torch.device
    amp_dtype: torch.dtype | None = None
    batch_size: int = 4
    tta: bool = False
    on_device: bool | None = None

    def __post_init__(self):
        self.geometry.tile_step(self.input_size)  # an illegal tile size is a clear error here

    @torch.no_grad()
    def tiles(self, tiles: np.ndarray) -> np.ndarray:
        """Foreground probabilities (n, out, out) of uint8 input tiles (n, in, in)."""
        inputs = network_input(tiles, self.normalisation, self.device, channels_last=self.device.type == "cuda")
        transforms = range(8) if self.tta else range(1)
        with autocast(self.device, self.amp_dtype):
            views = (self.model(_dihedral(inputs, index)).float() for index in transforms)
            probabilities = (torch.softmax(logits, dim=1)[:, 1] for logits in views)
            total = _average(_dihedral(p, index, inverse=True) for p, index in zip(probabilities, transforms))
        return total.cpu().numpy()

    def origins(self, region: Region) -> tuple[list[int], list[int]]:
        """First input row and column of every tile that ``region`` needs."""
        top, bottom, left, right = region
        return (
            input_origins(top, bottom, self.geometry, self.input_size),
            input_origins(left, right, self.geometry, self.input_size),
        )

    def input_extent(self, region: Region) -> tuple[np.ndarray, np.ndarray]:
        """The input rows and columns that ``region`` reads."""
        rows, cols = self.origins(region)
        return np.arange(rows[0], rows[-1] + self.input_size), np.arange(cols[0], cols[-1] + self.input_size)

    @property
    def stitches_on_device(self) -> bool:
        return self.device.type == "cuda" if self.on_device is None else self.on_device

    def region(self, read: Reader, region: Region) -> np.ndarray:
        """Foreground probabilities (bottom - top, right - left) of ``region`` of the image ``read`` gives.

        Unpadded networks (the paper's): the overlap-tile strategy; each output pixel
        comes from exactly one tile, and the result matches a single pass over the
        whole image when ``top`` and ``left`` are multiples of the pooling period
        (block and section origins are). Padded networks (TernausNet): overlapping
        tiles averaged with a smooth window, which hides the weaker predictions near
        each tile's zero-padded edges.
        """
        if self.stitches_on_device:
            return self.region_tensor(read, region).cpu().numpy()
        rows, cols = self.origins(region)
        canvas = (
            _BlendCanvas(region, rows, cols, self.input_size) if self.geometry.padded else _TileCanvas(self, region)
        )
        origins = [(y, x) for y in rows for x in cols]
        offsets = np.arange(self.input_size)
        for start in range(0, len(origins), self.batch_size):
            batch = origins[start : start + self.batch_size]
            probabilities = self.tiles(np.stack([read(y + offsets, x + offsets) for y, x in batch]))
            for origin, probability in zip(batch, probabilities):
                canvas.add(origin, probability)
        return canvas.result()

    @torch.no_grad()
    def region_tensor(self, read: Reader, region: Region) -> torch.Tensor:
        """``region``'s probabilities as ``region`` computes them, left on ``device``: the input window goes
        there once (uint8, pinned and copied without waiting on CUDA), and tiles are cut, normalised, turned
        for TTA and stitched there. Memory: the window, its tiles and their outputs, bounded by the region.

        Returns:
            float32 (bottom - top, right - left) on ``device``; the caller copies it back when it needs it.
        """
        rows, cols = self.origins(region)
        window = torch.from_numpy(np.ascontiguousarray(read(*self.input_extent(region))))
        if self.device.type == "cuda":
            window = window.pin_memory().to(self.device, non_blocking=True)
        step, size = self._grid_step(), self.input_size
        tiles = window.unfold(0, size, step).unfold(1, size, step).reshape(-1, size, size)  # row-major origins
        per_pass = max(1, self.batch_size // (8 if self.tta else 1))
        probabilities = torch.cat([self._views_probability(part) for part in tiles.split(per_pass)])
        grid = (len(rows), len(cols))
        if self.geometry.padded:  # the canvas starts at the first tile's input
            canvas, top, left = (
                _blend_on_device(probabilities, grid, size, step),
                region[0] - rows[0],
                region[2] - cols[0],
            )
        else:  # the first tile's output is the region's first pixel
            canvas, top, left = _tiles_on_device(probabilities, grid, step), 0, 0
        return canvas[top : top + region[1] - region[0], left : left + region[3] - region[2]]

    def _grid_step(self) -> int:
        """The distance between neighbouring tiles' origins (``input_origins``)."""
        if self.geometry.padded:
            return self.input_size - blend_overlap(self.input_size)
        return self.geometry.tile_step(self.input_size)

    def _views_probability(self, tiles: torch.Tensor) -> torch.Tensor:
        """Probabilities (n, out, out) of uint8 tiles (n, in, in) on the device: with ``tta``, the 8 views of the
        tiles go through the network together, ``batch_size`` inputs per pass, and are averaged in the order
        ``tiles`` adds them."""
        inputs = scaled_input(tiles, self.normalisation, channels_last=self.device.type == "cuda")
        views = range(8) if self.tta else range(1)
        stacked = torch.cat([_dihedral(inputs, index) for index in views])
        with autocast(self.device, self.amp_dtype):
            logits = torch.cat([self.model(part).float() for part in stacked.split(self.batch_size)])
        per_view = torch.softmax(logits, dim=1)[:, 1].unflatten(0, (len(views), len(tiles)))
        return _average(_dihedral(per_view[position], index, inverse=True) for position, index in enumerate(views))

    def section(self, section: np.ndarray) -> np.ndarray:
        """Foreground probabilities of a whole in-memory 2D section, mirrored at its borders."""
        height, width = section.shape
        return self.region(mirrored_reader(section), (0, height, 0, width))


def _tiles_on_device(probabilities: torch.Tensor, grid: tuple[int, int], step: int) -> torch.Tensor:
    """Unpadded networks on the device: each output tile's first ``step`` rows and columns side by side (what
    ``_TileCanvas`` does on the host); ``probabilities`` (rows x cols, out, out) in row-major tile order."""
    blocks = probabilities[:, :step, :step].reshape(grid[0], grid[1], step, step)
    return blocks.permute(0, 2, 1, 3).reshape(grid[0] * step, grid[1] * step)


def _blend_on_device(probabilities: torch.Tensor, grid: tuple[int, int], size: int, step: int) -> torch.Tensor:
    """Padded networks on the device: tiles summed with the smooth window and divided by the summed window
    (what ``_BlendCanvas`` does on the host), with ``fold`` over the tiles' regular grid."""
    window = torch.from_numpy(_blend_window(size)).to(probabilities.device)
    shape = ((grid[0] - 1) * step + size, (grid[1] - 1) * step + size)

    def fold(tiles: torch.Tensor) -> torch.Tensor:
        columns = tiles.reshape(len(tiles), size * size).T[None]
        return torch.nn.functional.fold(columns, shape, kernel_size=size, stride=step)[0, 0]

    return fold(probabilities * window) / fold(window.expand(len(probabilities), size, size))


class _TileCanvas:
    """Unpadded networks: each output tile's first ``tile_step`` rows and columns go to their place."""

    def __init__(self, predictor: TilePredictor, region: Region):
        self.region = region
        self.margin = predictor.geometry.margin(predictor.input_size)
        self.step = predictor.geometry.tile_step(predictor.input_size)
        top, bottom, left, right = region
        self.values = np.empty((bottom - top, right - left), np.float32)

    def add(self, origin: tuple[int, int], probability: np.ndarray) -> None:
        top, bottom, left, right = self.region
        y, x = origin[0] + self.margin, origin[1] + self.margin
        height, width = min(self.step, bottom - y), min(self.step, right - x)
        self.values[y - top : y - top + height, x - left : x - left + width] = probability[:height, :width]

    def result(self) -> np.ndarray:
        return self.values


class _BlendCanvas:
    """Padded networks: tiles accumulated with a smooth window, divided by the summed window."""

    def __init__(self, region: Region, rows: list[int], cols: list[int], size: int):
        self.region, self.first, self.size = region, (rows[0], cols[0]), size
        self.window = _blend_window(size)
        shape = (rows[-1] + size - rows[0], cols[-1] + size - cols[0])
        self.total, self.weight = np.zeros(shape, np.float32), np.zeros(shape, np.float32)

    def add(self, origin: tuple[int, int], probability: np.ndarray) -> None:
        y, x = origin[0] - self.first[0], origin[1] - self.first[1]
        place = (slice(y, y + self.size), slice(x, x + self.size))
        self.total[place] += probability * self.window
        self.weight[place] += self.window

    def result(self) -> np.ndarray:
        top, bottom, left, right = self.region
        y, x = top - self.first[0], left - self.first[1]
        return (self.total / self.weight)[y : y + bottom - top, x : x + right - left]
