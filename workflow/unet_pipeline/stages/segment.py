"""Segment stage: cells as instance labels, from a foreground probability map, section by section.

Each section becomes cells by the configured method (``segmentation.methods``):
watershed fragments of 1 - p joined by a multicut or by average linkage, or one
threshold and 4-connected components. The method's setting (edge threshold or
threshold) is the one the evaluation chose for V_rand on the validation sections
of the training dataset (``chosen_setting``), unless the config sets it. The
cells follow the proposal convention of ``segmentation.proposal``: 1-px lines
(id 0) between cells, so that the metrics score them exactly as written. Ids
are per section (1, 2, ... in each section; 0 = lines and dropped cells),
uint32.

The output is an OME-Zarr 0.5 labels group whose image-label ``cells`` points
back at the dataset's volume store (``source.image``), with a multiscale pyramid.
It is a store of its own rather than a new label under the volume, because the
volume store is the ingest stage's output and a stage never rewrites another
stage's output. Beside it, a per-cell table (CSV): section, label, area,
centroid and bounding box, in pixels of level 0.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..core.atomic import atomic_file, atomic_store
from ..core.errors import InputDataError
from ..core.progress import Progress
from ..data import volume_store
from ..data.pyramid import level_shapes, write_pyramid
from ..segmentation.methods import SegmentationOptions, segment_section, with_summary_setting

log = logging.getLogger(__name__)

TABLE_COLUMNS = ["section", "label", "area", "centroid_y", "centroid_x", "top", "left", "bottom", "right"]


def chosen_setting(summary_path, options: SegmentationOptions) -> SegmentationOptions:
    """``options`` with its method's setting taken from an evaluation summary file, where the config left it null
    (``with_summary_setting``)."""
    if getattr(options, options.tuned) is not None:
        return options
    try:
        summary = json.loads(Path(summary_path).read_text())
    except (OSError, ValueError) as error:
        raise InputDataError(f"{summary_path}: no V_rand setting of the cells in this evaluation summary ({error})")
    return with_summary_setting(summary, options, summary_path)


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


def _check_probability_array(probabilities, path) -> None:
    """Refuse what is not a (z, y, x) probability array before anything is written."""
    if probabilities.ndim != 3 or not (probabilities.dtype == np.uint8 or probabilities.dtype.kind == "f"):
        raise InputDataError(
            f"{path}: {volume_store.IMAGE_PATH} is {probabilities.dtype} of shape {probabilities.shape}, not a (z, y, x) "
            "probability array (uint8 or float)"
        )


def _section_probability(probabilities, z: int, path) -> np.ndarray:
    """Section ``z`` as float32 in [0, 1]; NaN or values outside are refused, naming the store and section."""
    section = volume_store.decode_probability(probabilities[z])
    if not np.isfinite(section).all() or section.min(initial=0) < 0 or section.max(initial=0) > 1:
        raise InputDataError(f"{path}: section {z} holds NaN, infinite or out-of-[0, 1] probabilities")
    return section


def segment_volume(prediction_path, out_path, table_path, options: SegmentationOptions) -> dict:
    """Segment every section of a prediction store into an OME-Zarr labels store and a per-cell CSV table.

    Sections are read, segmented and written one at a time; the store and the table appear only when
    complete (``atomic``).

    Returns:
        The provenance recorded in the store: the segmentation options, cell count, source prediction.
    """
    import pandas as pd
    import zarr

    if not Path(prediction_path).exists():
        raise InputDataError(f"{prediction_path}: no such prediction store")
    prediction = volume_store.open_store(prediction_path)
    if volume_store.IMAGE_PATH not in prediction:
        raise InputDataError(f"{prediction_path}: not a prediction store (no array {volume_store.IMAGE_PATH!r})")
    probabilities = prediction[volume_store.IMAGE_PATH]
    _check_probability_array(probabilities, prediction_path)
    shape, chunks = probabilities.shape, probabilities.chunks
    rows = []
    with atomic_store(out_path) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        root.attrs["ome"] = {"version": volume_store.NGFF_VERSION, "labels": ["cells"]}
        cells_group = root.create_group("cells")
        labels = volume_store.create_level(cells_group, "0", shape, chunks, "uint32")
        progress = Progress(shape[0], f"segment {Path(out_path).name}: sections", log)
        for z in range(shape[0]):
            cells = segment_section(_section_probability(probabilities, z, prediction_path), options)
            labels[z] = cells
            rows += cell_table(z, cells)
            progress.update()
        write_pyramid(cells_group, "nearest")
        cells_group.attrs["ome"] = _label_attrs(prediction, 1 + len(level_shapes(shape, chunks)))
        info = {"prediction": str(prediction_path), "segmentation": dataclasses.asdict(options), "cells": len(rows)}
        info |= {"ids": "per section: 1..n, 0 = lines between cells and dropped cells"}
        root.attrs[volume_store.PROVENANCE_KEY] = info
        with atomic_file(table_path) as table_tmp:
            pd.DataFrame(rows, columns=TABLE_COLUMNS).to_csv(table_tmp, index=False)
    setting = f"{options.tuned} {getattr(options, options.tuned)}"
    log.info(
        "segmented %s by %s at %s: %d cells in %d sections",
        prediction_path,
        options.method,
        setting,
        len(rows),
        shape[0],
    )
    return info


def write_cells_tiff(segmentation_path, tiff_path) -> None:
    """The cells as an ISBI 2012 submission: a multi-page float32 TIFF, 1 inside cells, 0 on the lines between
    them (a boundary map, which the challenge accepted). Scored at any threshold in (0, 1) (``python -m
    unet_pipeline.metrics``), it gives exactly the evaluation's scores of the cells (``segmentation.proposal``).

    Pages are written one section at a time into a temporary file renamed into place when complete.
    """
    import tifffile

    path = Path(segmentation_path)
    try:
        cells = volume_store.open_store(path)["cells"]["0"]
    except (KeyError, FileNotFoundError) as error:
        raise InputDataError(f"{path}: not a segmentation store (no array cells/0: {error})") from error
    with atomic_file(tiff_path) as tmp, tifffile.TiffWriter(tmp) as tiff:
        for section in range(cells.shape[0]):
            page = (cells[section] > 0).astype(np.float32)
            tiff.write(page, photometric="minisblack", contiguous=True)
