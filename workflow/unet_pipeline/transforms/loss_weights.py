"""The loss weight map of the U-Net paper (eq. 2), fast enough to compute on the fly.

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))

``w_c`` balances the class frequencies; ``d1`` and ``d2`` are the distances from
a pixel to the border of the nearest and the second-nearest cell. The border term
is what makes the network learn the thin background gaps between touching cells.

Which pixels get the border term: background (membrane) pixels only. Inside a
cell ``d1`` is 0 and ``d2`` the distance to the neighbouring cell, so applying
the term there would also emphasise cell interiors near a neighbour, which the
paper's Fig. 3d does not show; the gap itself is what must be separated. With
fewer than two cells within reach there is no second-nearest cell and the term
is 0.

Speed: the brute-force method runs one full-image distance transform per cell
(about a hundred per ISBI section). The border term falls below ``tolerance``
once ``d1 + d2`` exceeds ``cutoff = sigma * sqrt(2 ln(w0 / tolerance))``, so a
cell only matters within ``cutoff`` of its bounding box: each cell's distance
transform runs on that window alone and the two smallest distances per pixel are
kept in running arrays. The result equals brute force up to ``tolerance``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ..core.defaults import schema_defaults
from .cells import cells_of

DEFAULT_TOLERANCE = 1e-7
# the paper's w0 and sigma (in pixels), whose home is the config schema's ``weight_map``
W0, SIGMA = (schema_defaults("weight_map")[key] for key in ("w0", "sigma"))


def class_weights(foreground_fraction: float) -> tuple[float, float]:
    """(background, foreground) weights: inverse class frequency, scaled so the largest is 1.

    The rarer class gets weight 1, the commoner one the ratio of the two
    frequencies. A class that does not occur at all keeps weight 1.
    """
    if not 0.0 <= foreground_fraction <= 1.0:
        raise ValueError(f"foreground fraction must lie in [0, 1], not {foreground_fraction}")
    background_fraction = 1.0 - foreground_fraction
    if foreground_fraction == 0.0 or background_fraction == 0.0:
        return 1.0, 1.0
    rarest = min(foreground_fraction, background_fraction)
    return rarest / background_fraction, rarest / foreground_fraction


def border_cutoff(w0: float, sigma: float, tolerance: float = DEFAULT_TOLERANCE) -> float:
    """Distance sum d1 + d2 beyond which the border term is below ``tolerance``."""
    if w0 <= tolerance:
        return 0.0
    return sigma * math.sqrt(2.0 * math.log(w0 / tolerance))


def border_weight(
    cells: np.ndarray, w0: float = W0, sigma: float = SIGMA, tolerance: float = DEFAULT_TOLERANCE
) -> np.ndarray:
    """The border term w0 * exp(-(d1 + d2)^2 / (2 sigma^2)) on background pixels (cells == 0), float32."""
    cutoff = border_cutoff(w0, sigma, tolerance)
    margin = math.ceil(cutoff) + 1
    nearest = np.full(cells.shape, np.inf)
    second = np.full(cells.shape, np.inf)
    for cell_id, box in enumerate(ndimage.find_objects(cells), start=1):
        if box is None:
            continue
        window = tuple(slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(box, cells.shape))
        distance = ndimage.distance_transform_edt(cells[window] != cell_id)
        distance[distance > cutoff] = np.inf
        d1, d2 = nearest[window], second[window]
        closer = distance < d1
        d2[...] = np.where(closer, d1, np.minimum(d2, distance))
        d1[...] = np.where(closer, distance, d1)
    total = nearest + second
    weight = np.zeros(cells.shape, dtype=np.float32)
    near = (cells == 0) & (total <= cutoff)
    weight[near] = w0 * np.exp(-(total[near] ** 2) / (2.0 * sigma**2))
    return weight


def weight_map(
    labels: np.ndarray,
    class_weight: tuple[float, float],
    w0: float = W0,
    sigma: float = SIGMA,
    label_type: str = "binary",
) -> np.ndarray:
    """The full weight map w_c + border term of one label section (0/1 or instance ids), float32."""
    cells = cells_of(labels, label_type)
    background_weight, foreground_weight = class_weight
    balance = np.where(cells > 0, np.float32(foreground_weight), np.float32(background_weight))
    return balance + border_weight(cells, w0, sigma)


def foreground_fraction(labels, sections) -> float:
    """Fraction of foreground (cell) pixels over the given sections of a label array."""
    import dask.array as da

    if not sections:
        raise ValueError("no sections to count class frequencies over")
    stack = da.from_zarr(labels)[sections]
    return float((stack > 0).mean().compute())


def brute_force_border_weight(cells: np.ndarray, w0: float = W0, sigma: float = SIGMA) -> np.ndarray:
    """The border term by the naive method: one full-image distance transform per cell.

    Deliberately straightforward: the reference that ``border_weight`` is tested and benchmarked
    against (tests/stages/test_weight_maps.py, benchmarks/weight_map_speed.py).
    """
    ids = [i for i in np.unique(cells) if i != 0]
    if len(ids) < 2:
        return np.zeros(cells.shape, dtype=np.float32)
    distances = np.stack([ndimage.distance_transform_edt(cells != i) for i in ids])
    distances.sort(axis=0)
    d1, d2 = distances[0], distances[1]
    weight = w0 * np.exp(-((d1 + d2) ** 2) / (2.0 * sigma**2))
    return np.where(cells == 0, weight, 0.0).astype(np.float32)
