"""Weight-maps stage: the paper's loss weight map (``transforms.loss_weights``) of every labelled section,
computed with dask and stored as float32 OME-Zarr, and its figure.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..core.atomic import atomic_store
from ..core.errors import InputDataError
from ..core.figures import pyplot
from ..core.progress_dask import dask_progress
from ..data import volume_store
from ..transforms.cells import cells_of
from ..transforms.loss_weights import DEFAULT_TOLERANCE, SIGMA, W0, class_weights, foreground_fraction, weight_map

log = logging.getLogger(__name__)


def write_weight_maps(volume_path, out_path, w0: float = W0, sigma: float = SIGMA, workers: int = 1) -> dict:
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
