"""Segment stage: cells as instance labels, from a foreground probability map, section by section.

Each section is binarised at a threshold (the one the evaluation chose for V_rand
on labelled data, or ``segmentation.threshold``); its 4-connected cells are the
seeds of the watershed that the metrics use (``metrics.thinning``), which splits
the predicted membrane among them and leaves 1-px lines between cells, so the
cells tile the section and score exactly the evaluation's V_rand. Cells smaller
than ``segmentation.min_size`` pixels become background. Ids are per section
(1, 2, ... in each section; 0 = watershed lines and dropped cells), uint32; a
section without any foreground has no cells (the metrics would flood it into one
segment).

The output is an OME-Zarr 0.5 labels group whose image-label ``cells`` points
back at the dataset's volume store (``source.image``), with a multiscale pyramid.
It is a store of its own rather than a new label under the volume, because the
volume store is the ingest stage's output and a stage never rewrites another
stage's output. Beside it, a per-cell table (CSV): section, label, area,
centroid and bounding box, in pixels of level 0.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..core.atomic import atomic_file, atomic_store
from ..core.defaults import defaults_from_schema
from ..core.errors import InputDataError
from ..core.progress import Progress
from ..data import volume_store
from ..data.pyramid import level_shapes, write_pyramid
from ..metrics.scores import FIJI_VALUE
from ..metrics.thinning import thinned_cells

log = logging.getLogger(__name__)

TABLE_COLUMNS = ["section", "label", "area", "centroid_y", "centroid_x", "top", "left", "bottom", "right"]


@dataclass(frozen=True)
@defaults_from_schema("segmentation", required=("threshold",))
class SegmentationOptions:
    """How probabilities become cells: ``threshold`` on the foreground probability (the config's null resolved
    by ``evaluated_threshold``), ``min_size`` in pixels (default: the schema)."""

    threshold: float
    min_size: int


def evaluated_threshold(summary_path) -> float:
    """The V_rand operating threshold of an evaluation summary (chosen on its validation sections)."""
    import json

    try:
        return json.loads(Path(summary_path).read_text())["metrics"]["v_rand"]["threshold"]
    except (OSError, ValueError, KeyError) as error:
        raise InputDataError(f"{summary_path}: no V_rand threshold in this evaluation summary ({error})") from error


def segment_section(probability: np.ndarray, options: SegmentationOptions) -> np.ndarray:
    """Instance labels of one section.

    Args:
        probability: (y, x) float32 foreground probability.
        options: threshold (compared in double, Fiji's value for the labels 0.0, ..., 1.0) and minimum size.

    Returns:
        (y, x) uint32 ids 1..n of the cells, 0 on the watershed lines and dropped small cells.
    """
    foreground = probability.astype(np.float64) > FIJI_VALUE.get(options.threshold, options.threshold)
    if not foreground.any():  # the metrics' flooding would make the whole section one segment
        return np.zeros(probability.shape, np.uint32)
    cells = thinned_cells(foreground)
    sizes = np.bincount(cells.ravel())
    keep = sizes >= max(options.min_size, 1)
    keep[0] = False
    new_ids = np.where(keep, np.cumsum(keep), 0).astype(np.uint32)  # the kept cells, numbered 1..n
    return new_ids[cells]


def cell_table(section: int, cells: np.ndarray) -> list[dict]:
    """One row per cell: area, centroid and bounding box (bottom and right exclusive), in pixels."""
    count = int(cells.max())
    if count == 0:
        return []
    ids = np.arange(1, count + 1)
    areas = np.bincount(cells.ravel(), minlength=count + 1)[1:]
    centroids = ndimage.center_of_mass(np.ones_like(cells), cells, ids)
    boxes = ndimage.find_objects(cells)
    return [
        dict(
            zip(
                TABLE_COLUMNS,
                (section, int(i), int(a), float(c[0]), float(c[1]), b[0].start, b[1].start, b[0].stop, b[1].stop),
            )
        )
        for i, a, c, b in zip(ids, areas, centroids, boxes)
    ]


def _label_attrs(prediction, levels: int) -> dict:
    """OME attrs of the image-label: the prediction's voxel size, and the volume it segments as source."""
    multiscale = prediction.attrs["ome"]["multiscales"][0]
    scale = multiscale["datasets"][0]["coordinateTransformations"][0]["scale"]
    unit = multiscale["axes"][0].get("unit")
    attrs = volume_store.image_attrs("cells", scale if unit else None, unit, levels)
    return attrs | {"image-label": {"source": {"image": "../../../volume.zarr"}}}


def segment_volume(prediction_path, out_path, table_path, options: SegmentationOptions) -> dict:
    """Segment every section of a prediction store into an OME-Zarr labels store and a per-cell CSV table.

    Sections are read, segmented and written one at a time; the store and the table appear only when
    complete (``atomic``).

    Returns:
        The provenance recorded in the store: threshold, minimum size, cell count, source prediction.
    """
    import pandas as pd
    import zarr

    if not Path(prediction_path).exists():
        raise InputDataError(f"{prediction_path}: no such prediction store")
    prediction = volume_store.open_store(prediction_path)
    if volume_store.IMAGE_PATH not in prediction:
        raise InputDataError(f"{prediction_path}: not a prediction store (no array {volume_store.IMAGE_PATH!r})")
    probabilities = prediction[volume_store.IMAGE_PATH]
    shape, chunks = probabilities.shape, probabilities.chunks
    rows = []
    with atomic_store(out_path) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        root.attrs["ome"] = {"version": volume_store.NGFF_VERSION, "labels": ["cells"]}
        cells_group = root.create_group("cells")
        labels = volume_store.create_level(cells_group, "0", shape, chunks, "uint32")
        progress = Progress(shape[0], f"segment {Path(out_path).name}: sections", log)
        for z in range(shape[0]):
            cells = segment_section(volume_store.decode_probability(probabilities[z]), options)
            labels[z] = cells
            rows += cell_table(z, cells)
            progress.update()
        write_pyramid(cells_group, "nearest")
        cells_group.attrs["ome"] = _label_attrs(prediction, 1 + len(level_shapes(shape, chunks)))
        info = {"prediction": str(prediction_path), "threshold": options.threshold, "min_size": options.min_size}
        info |= {"cells": len(rows), "ids": "per section: 1..n, 0 = watershed lines and dropped cells"}
        root.attrs[volume_store.PROVENANCE_KEY] = info
        with atomic_file(table_path) as table_tmp:
            pd.DataFrame(rows, columns=TABLE_COLUMNS).to_csv(table_tmp, index=False)
    log.info(
        "segmented %s at threshold %s: %d cells in %d sections", prediction_path, options.threshold, len(rows), shape[0]
    )
    return info
