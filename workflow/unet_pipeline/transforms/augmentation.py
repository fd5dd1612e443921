"""The augmented training set: randomly deformed tiles of image, labels and weights.

With 30 labelled sections, random elastic deformation is what makes U-Net train
(paper, sect. 3.1). Each sample is one input tile (e.g. 572x572) with the label
and weight tiles of the matching output size (388x388), all cut through the
same geometric transform:

- shift: a random tile position in a random training section (off: centred);
- flip along y and/or x, each with probability 1/2;
- rotation by an angle drawn uniformly from [-max_degrees, max_degrees];
- elastic deformation: displacement vectors on a coarse ``grid_points`` x
  ``grid_points`` grid spread over the tile, each component drawn from
  N(0, sigma^2) pixels, interpolated to a smooth per-pixel field by cubic splines;
- gray values: gamma, contrast and brightness drawn per sample;
- for a base that transfers to other microscopes (off by default; each applied to a sample with its own
  ``probability``, as nnU-Net's training transforms are): ``scale`` (another pixel size, a zoom drawn
  log-uniformly from its range), and on the input tile only ``noise`` (Gaussian, its variance a fraction
  of the tile's), ``blur`` (Gaussian, sigma in pixels) and ``low_resolution`` (nearest-neighbour down to a
  fraction of the size, cubic back up). nnU-Net's default ranges are the schema's.

The input tile's gray values go through noise, blur, gamma, contrast and brightness, then low resolution,
nnU-Net's order but for brightness, and are rounded to uint8 once, at the end.

Sampling: the image by cubic spline interpolation ("bicubic"), the labels by
linear interpolation thresholded at 0.5 (so they stay binary and their borders
stay smooth), the weights linearly. Context outside the section is mirrored
(``np.pad`` mode ``reflect``), as in the overlap-tile strategy. Only the window of
the section that a sample touches is read, so large sections cost no more.

Why scipy.ndimage.map_coordinates rather than elasticdeform: one coordinate
map carries the whole transform (shift, flip, rotation and deformation) and is
applied to a window read with mirrored context, so labels and weights are
sampled on the output tile only and large sections are never loaded whole;
elasticdeform deforms the whole array it is given. benchmarks/augment_speed.py
compares both on the same grid and sigma.

Determinism: sample ``i`` draws from ``numpy.random.default_rng([seed, i])``,
so the arrays are bit-identical whatever the number of workers or tasks.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import ndimage

from ..core.defaults import schema_defaults
from ..core.errors import PipelineError
from ..data.mirror import read_mirrored
from ..models.tile_geometry import tile_margin

WINDOW_PAD = 8  # extra context read around a sample so the spline prefilter sees no window edge
# the augmentations for transfer, in the order their draws are made (after every other draw, so that a set
# made without them is the same as before they existed)
TRANSFER = ("scale", "noise", "blur", "low_resolution")


@functools.lru_cache(maxsize=8)
def _spline_matrix(size: int, points: int) -> np.ndarray:
    """(size, points) weights that interpolate values on ``points`` evenly spread nodes to ``size`` pixels."""
    positions = np.linspace(0, points - 1, size)
    return np.stack(
        [ndimage.map_coordinates(np.eye(points)[k], [positions], order=3, mode="nearest") for k in range(points)],
        axis=1,
    )


def elastic_field(displacements: np.ndarray, size: int) -> np.ndarray:
    """Per-pixel (2, size, size) field from (2, g, g) node displacements, by cubic spline interpolation."""
    weights = _spline_matrix(size, displacements.shape[-1])
    # field[c] = weights @ displacements[c] @ weights.T, written as broadcast sums over the few
    # nodes: BLAS would spin up its thread pool, which starves the other worker processes
    along_x = (displacements[:, :, :, None] * weights.T[None, None]).sum(axis=2)
    return (weights.T[None, :, :, None] * along_x[:, :, None, :]).sum(axis=1)


def draw_sample(rng: np.random.Generator, options: dict, sections: list[int], section_shape, output_size: int) -> dict:
    """Random parameters of one sample (section, position and every augmentation's draw)."""
    height, width = section_shape
    shift, flip, rotation = options["shift"], options["flip"], options["rotation"]
    elastic, intensity = options["elastic"], options["intensity"]
    params = {"section": int(sections[rng.integers(len(sections))])}
    if shift["enabled"]:
        params["origin"] = [
            int(rng.integers(0, max(height - output_size, 0) + 1)),
            int(rng.integers(0, max(width - output_size, 0) + 1)),
        ]
    else:
        params["origin"] = [(height - output_size) // 2, (width - output_size) // 2]
    params["flip"] = [bool(rng.random() < 0.5), bool(rng.random() < 0.5)] if flip["enabled"] else [False, False]
    params["angle"] = float(rng.uniform(-1, 1) * rotation["max_degrees"]) if rotation["enabled"] else 0.0
    grid = elastic["grid_points"]
    params["displacements"] = rng.normal(0.0, elastic["sigma"], (2, grid, grid)) if elastic["enabled"] else None
    if intensity["enabled"]:
        params["gamma"] = float(math.exp(rng.uniform(-1, 1) * intensity["gamma"]))
        params["contrast"] = float(1.0 + rng.uniform(-1, 1) * intensity["contrast"])
        params["brightness"] = float(rng.uniform(-1, 1) * intensity["brightness"])
    return params | draw_transfer(rng, options)


@functools.cache
def _transfer_defaults(name: str) -> dict:
    """The schema's settings of augmentation ``name``, read once (every sample asks; never mutated)."""
    return schema_defaults(f"augmentation/{name}")


def transfer_settings(options: dict, name: str) -> dict:
    """The settings of augmentation ``name`` of ``TRANSFER``; what a caller leaves out (the library called
    without the workflow's filled config) is the schema's, that is off."""
    return _transfer_defaults(name) | options.get(name, {})


def check_transfer(options: dict) -> None:
    """Refuse a range of an augmentation for transfer that is empty, or a zoom range that reaches 0.

    Raises:
        PipelineError: naming the setting (``augmentation.NAME.range``) and its value.
    """
    for name in TRANSFER:
        low, high = transfer_settings(options, name)["range"]
        if low > high or (name == "scale" and low <= 0):
            need = "0 < low <= high" if name == "scale" else "low <= high"
            raise PipelineError(f"augmentation.{name}.range {[low, high]}: needs {need}")


def draw_transfer(rng: np.random.Generator, options: dict) -> dict:
    """The draws of the augmentations for transfer (``TRANSFER``): each enabled one applies to the sample with
    its ``probability``, its value drawn from its ``range`` (the scale log-uniformly, so that zooming in and out
    are alike). Noise also draws the seed of its pixels. An augmentation that is off draws nothing."""
    params = {}
    for name in TRANSFER:
        spec = transfer_settings(options, name)
        if not spec["enabled"] or rng.random() >= spec["probability"]:
            continue
        low, high = spec["range"]
        if name == "scale":
            params[name] = float(math.exp(rng.uniform(math.log(low), math.log(high))))
        else:
            params[name] = float(rng.uniform(low, high))
        if name == "noise":
            params["noise_seed"] = int(rng.integers(2**32))
    return params


def source_coordinates(params: dict, input_size: int, margin: int) -> np.ndarray:
    """(2, input_size, input_size) section coordinates that every pixel of the input tile samples.

    The output tile starts at ``origin``; the input tile adds ``margin`` around it.
    Flip, rotation, scale and deformation act about the tile centre; a scale above 1 magnifies (the tile
    covers 1/scale of the section it covers unscaled).
    """
    centre = (input_size - 1) / 2.0
    along = (np.arange(input_size, dtype=np.float64) - centre) / params.get("scale", 1.0)
    ys = -along if params["flip"][0] else along
    xs = -along if params["flip"][1] else along
    angle = math.radians(params["angle"])
    cos, sin = math.cos(angle), math.sin(angle)
    coords = np.empty((2, input_size, input_size))
    np.add(cos * ys[:, None], -sin * xs[None, :], out=coords[0])
    np.add(sin * ys[:, None], cos * xs[None, :], out=coords[1])
    if params["displacements"] is not None:
        coords += elastic_field(params["displacements"], input_size)
    tile_centre = np.array(params["origin"], dtype=np.float64) - margin + centre
    coords += tile_centre[:, None, None]
    return coords


def sample_window(array, section: int, coords: np.ndarray, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """The mirrored window of a section that ``coords`` touch, and ``coords`` relative to it."""
    low = np.floor(coords.reshape(2, -1).min(axis=1)).astype(int) - pad
    high = np.ceil(coords.reshape(2, -1).max(axis=1)).astype(int) + pad + 1
    window = read_mirrored(array, section, np.arange(low[0], high[0]), np.arange(low[1], high[1]))
    return window, coords - low[:, None, None]


def adjust_gray_values(image: np.ndarray, params: dict) -> np.ndarray:
    """The input tile's gray values as uint8: noise and blur, then gamma, contrast about mid-gray and
    brightness, then low resolution, on values scaled to [0, 1] and clipped to it before gamma and at the end."""
    values = np.clip(image / 255.0, 0.0, 1.0)
    if "noise" in params:  # standard deviation sqrt(variance fraction) x the tile's own
        noise = np.random.default_rng(params["noise_seed"]).standard_normal(values.shape)
        values = np.clip(values + noise * math.sqrt(params["noise"]) * values.std(), 0.0, 1.0)
    if "blur" in params:
        values = ndimage.gaussian_filter(values, params["blur"], mode="reflect")
    if "gamma" in params:  # drawn together with contrast and brightness when intensity is enabled
        values = (values ** params["gamma"] - 0.5) * params["contrast"] + 0.5 + params["brightness"]
    if "low_resolution" in params:
        values = low_resolution(values, params["low_resolution"])
    return np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)


def low_resolution(values: np.ndarray, zoom: float) -> np.ndarray:
    """A (n, n) tile as a camera of ``zoom`` times its resolution sees it: the pixels nearest to an (m, m)
    grid, m = round(zoom n), brought back to (n, n) by cubic splines (nnU-Net's orders 0 and 3).

    Each kept pixel stays where it was (the splines pass through it), so the tile does not shift against its
    labels by the half pixel that a coarse grid's own centres would put between them.
    """
    size = values.shape[0]
    coarse = max(round(zoom * size), 1)
    nearest = np.minimum(((np.arange(coarse) + 0.5) * size / coarse).astype(int), size - 1)
    down = values[np.ix_(nearest, nearest)]
    positions = np.interp(np.arange(size), nearest, np.arange(coarse))  # kept pixel k at coarse coordinate k
    grid = np.meshgrid(positions, positions, indexing="ij")
    return ndimage.map_coordinates(down, grid, order=3, mode="nearest")


def make_sample(image, labels, weights, params: dict, input_size: int, output_size: int):
    """One augmented (input uint8, labels uint8 0/1, weights float32) sample from zarr arrays."""
    margin = tile_margin(input_size, output_size)
    coords = source_coordinates(params, input_size, margin)
    section = params["section"]
    window, local = sample_window(image, section, coords, WINDOW_PAD)
    tile = ndimage.map_coordinates(window.astype(np.float64), local, order=3, mode="nearest")
    inner = coords[:, margin : margin + output_size, margin : margin + output_size]
    window, local = sample_window(labels, section, inner, 1)
    label_tile = ndimage.map_coordinates((window > 0).astype(np.float32), local, order=1, mode="nearest") > 0.5
    window, local = sample_window(weights, section, inner, 1)
    weight_tile = ndimage.map_coordinates(window.astype(np.float32), local, order=1, mode="nearest")
    return adjust_gray_values(tile, params), label_tile.astype(np.uint8), weight_tile.astype(np.float32)


def generate_samples(arrays: tuple, indices: range, options: dict, sections, tile: tuple[int, int]) -> dict:
    """Samples ``indices`` of the augmented set, in memory.

    Args:
        arrays: the (z, y, x) image, labels and weights (Zarr or NumPy); only the windows samples touch are read.
        indices: which samples; sample ``i`` draws from ``default_rng([options['seed'], i])``.
        options: the augmentation settings (``config.yaml``, ``augmentation``), with ``seed``.
        sections: the training sections samples are drawn from.
        tile: (input_size, output_size) of the network.

    Returns:
        ``inputs`` (n, in, in) uint8, ``labels`` (n, out, out) uint8 0/1, ``weights`` (n, out, out) float32 and
        ``sections`` (n,) int32.
    """
    image, labels, weights = arrays
    input_size, output_size = tile
    block = {
        "inputs": np.empty((len(indices), input_size, input_size), np.uint8),
        "labels": np.empty((len(indices), output_size, output_size), np.uint8),
        "weights": np.empty((len(indices), output_size, output_size), np.float32),
        "sections": np.empty(len(indices), np.int32),
    }
    for row, index in enumerate(indices):
        rng = np.random.default_rng([options["seed"], index])
        params = draw_sample(rng, options, sections, image.shape[1:], output_size)
        sample = make_sample(image, labels, weights, params, input_size, output_size)
        block["inputs"][row], block["labels"][row], block["weights"][row] = sample
        block["sections"][row] = params["section"]
    return block
