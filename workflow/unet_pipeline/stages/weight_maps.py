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

import logging
import math
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..core.atomic import atomic_store
from ..core.errors import InputDataError
from ..core.figures import pyplot
from ..core.progress_dask import dask_progress
from ..data import volume_store
from ..transforms.cells import cells_of

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 1e-7


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
    cells: np.ndarray, w0: float = 10.0, sigma: float = 5.0, tolerance: float = DEFAULT_TOLERANCE
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
    w0: float = 10.0,
    sigma: float = 5.0,
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


def brute_force_border_weight(cells: np.ndarray, w0: float = 10.0, sigma: float = 5.0) -> np.ndarray:
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


def write_weight_maps(volume_path, out_path, w0: float = 10.0, sigma: float = 5.0, workers: int = 1) -> dict:
    """Compute the weight map of every labelled section with dask and store them as float32 Zarr.

    Class frequencies come from the dataset's training sections (all sections
    when none are declared). One dask task per section, run on ``workers``
    threads; the store appears atomically (``atomic.atomic_store``).
    """
    import dask
    import dask.array as da
    import zarr

    root = volume_store.open_store(volume_path)
    info = volume_store.provenance(root)
    if not info.get("labels"):
        raise InputDataError(f"{volume_path}: dataset {info['dataset']!r} has no labels, so it has no weight maps")
    labels = root[volume_store.LABELS_PATH]
    label_type = info["labels"]["type"]
    balance_sections = info["sections"]["train"] or list(range(labels.shape[0]))
    fraction = foreground_fraction(labels, balance_sections)
    weights_c = class_weights(fraction)

    def weigh(block):
        return weight_map(block[0], weights_c, w0, sigma, label_type)[None]

    sections = da.from_zarr(labels, chunks=(1, *labels.shape[1:]))
    lazy = sections.map_blocks(weigh, dtype=np.float32)
    attrs = {"dataset": info["dataset"], "w0": w0, "sigma": sigma, "tolerance": DEFAULT_TOLERANCE}
    attrs |= {"border_term_on": "background pixels", "foreground_fraction": fraction}
    attrs |= {"class_weights": {"background": weights_c[0], "foreground": weights_c[1]}}
    attrs |= {"class_frequency_sections": balance_sections, "labels_pixel_sha256": info["labels"]["pixel_sha256"]}
    with atomic_store(out_path) as tmp:
        out = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        target = volume_store.create_level(
            out, volume_store.IMAGE_PATH, labels.shape, volume_store.section_chunks(labels.shape), "float32"
        )
        with dask.config.set(scheduler="threads", num_workers=workers), dask_progress("weight maps: tasks", log):
            da.store(lazy, target, lock=False)
        out.attrs["ome"] = volume_store.image_attrs("weights", info["voxel_size"], info["unit"])
        out.attrs[volume_store.PROVENANCE_KEY] = attrs
    return attrs


def plot_weight_map(volume_path, weights_path, figure_path, section: int | None = None) -> int:
    """Save the paper's Fig. 3 for one section (image, cells, weight map); return the section shown."""
    plt = pyplot()

    root = volume_store.open_store(volume_path)
    info = volume_store.provenance(root)
    if section is None:
        section = (info["sections"]["train"] or [0])[0]
    weights_root = volume_store.open_store(weights_path)
    weights = weights_root[volume_store.IMAGE_PATH][section]
    cells = cells_of(root[volume_store.LABELS_PATH][section], info["labels"]["type"])
    attrs = volume_store.provenance(weights_root)
    colours = np.random.default_rng(0).random((int(cells.max()) + 1, 3)) * 0.7 + 0.3
    colours[0] = 0
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.8), constrained_layout=True)
    axes[0].imshow(root[volume_store.IMAGE_PATH][section], cmap="gray")
    axes[0].set_title(f"image, section {section}")
    axes[1].imshow(colours[cells])
    axes[1].set_title(f"{int(cells.max())} cells (4-connected)")
    shown = axes[2].imshow(weights, cmap="jet")
    axes[2].set_title(f"weight map (w0={attrs['w0']}, sigma={attrs['sigma']} px)")
    fig.colorbar(shown, ax=axes[2], shrink=0.85)
    for axis in axes:
        axis.set_axis_off()
    Path(figure_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure_path, dpi=100)
    plt.close(fig)
    return section
