"""Segment stage: cells as instance labels, from a foreground probability map, block by block.

Each section (or, with ``segmentation.dimensions`` 3, the volume) becomes cells by the configured
method (``segmentation.methods``): watershed fragments of 1 - p joined by a multicut or by average
linkage, or one threshold and 4-connected components, made block by block with bounded memory
(``segmentation.blockwise``), continued after a kill from the work folder beside the output
(``segmentation.work``), and shared among shard jobs (``segment_shard``). The method's setting
(edge threshold or threshold) is the one the evaluation chose for V_rand on the validation
sections of the training dataset (``chosen_setting``), unless the config sets it. Section cells
follow the proposal convention of ``segmentation.proposal``: 1-px lines (id 0) between cells, so
that the metrics score them exactly as written. Ids are per section (per volume for 3D cells),
1..n in the order of each cell's first pixel; 0 = lines and dropped cells; uint32.

The output is an OME-Zarr 0.5 labels group whose image-label ``cells`` points
back at the dataset's volume store (``source.image``), with a multiscale pyramid.
It is a store of its own rather than a new label under the volume, because the
volume store is the ingest stage's output and a stage never rewrites another
stage's output. Beside it, a per-cell table (CSV, ``TABLE_COLUMNS``; 3D:
``TABLE_COLUMNS_3D``): area, centroid and bounding box, in pixels of level 0.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from ..core.atomic import atomic_file, atomic_store
from ..core.errors import InputDataError
from ..data import volume_store
from ..data.pyramid import level_shapes, write_pyramid
from ..segmentation.methods import SegmentationOptions, with_summary_setting
from ..segmentation.volume import Segmenter, work_arrays
from ..segmentation.work import SegmentWork

log = logging.getLogger(__name__)

# The per-cell table's columns: boxes are [first, last + 1) in pixels of level 0.
TABLE_COLUMNS = ["section", "label", "area", "centroid_y", "centroid_x", "top", "left", "bottom", "right"]
TABLE_COLUMNS_3D = ["label", "area", "centroid_z", "centroid_y", "centroid_x"]
TABLE_COLUMNS_3D += ["front", "top", "left", "back", "bottom", "right"]


def chosen_setting(summary_path, options: SegmentationOptions) -> SegmentationOptions:
    """``options`` with its method's setting taken from an evaluation summary file, where the config left it null
    (``with_summary_setting``)."""
    if options.setting is not None:
        return options
    try:
        summary = json.loads(Path(summary_path).read_text())
    except (OSError, ValueError) as error:
        raise InputDataError(f"{summary_path}: no V_rand setting of the cells in this evaluation summary ({error})")
    return with_summary_setting(summary, options, summary_path)


def _label_attrs(prediction, levels: int) -> dict:
    """OME attrs of the image-label: the prediction's voxel size, and the volume it segments as source."""
    multiscale = prediction.attrs["ome"]["multiscales"][0]
    scale = multiscale["datasets"][0]["coordinateTransformations"][0]["scale"]
    unit = multiscale["axes"][0].get("unit")
    attrs = volume_store.image_attrs("cells", scale if unit else None, unit, levels)
    return attrs | {"image-label": {"source": {"image": "../../../volume.zarr"}}}


class CellTable:
    """The per-cell table, accumulated block by block: area, centroid and bounding box of every cell of every
    whole (section, or the volume for 3D cells)."""

    def __init__(self, sections: bool):
        self.sections, self.rows, self.whole = sections, [], None

    def start(self, whole: tuple, cells: int, ndim: int) -> None:
        """Begin a whole of ``cells`` cells (ids 1..cells)."""
        self.whole, self.area = whole, np.zeros(cells + 1, np.int64)
        self.sums = np.zeros((ndim, cells + 1))
        self.low = np.full((ndim, cells + 1), np.iinfo(np.int64).max)
        self.high = np.full((ndim, cells + 1), -1)

    def add(self, block, cells: np.ndarray) -> None:
        """Count one block's cells (ids within the whole's)."""
        flat = cells.ravel()
        self.area += np.bincount(flat, minlength=len(self.area))
        coords = np.indices(cells.shape).reshape(cells.ndim, -1) + np.array([[s.start] for s in block.inner])
        for axis, c in enumerate(coords):
            self.sums[axis] += np.bincount(flat, c, len(self.area))
            np.minimum.at(self.low[axis], flat, c)
            np.maximum.at(self.high[axis], flat, c + 1)

    def finish(self) -> None:
        """One row per cell of the whole."""
        head = list(self.whole) if self.sections else []
        for label in range(1, len(self.area)):
            centroid = (self.sums[:, label] / self.area[label]).tolist()
            box = self.low[:, label].tolist() + self.high[:, label].tolist()
            self.rows.append([*head, label, int(self.area[label]), *centroid, *box])

    def frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows, columns=TABLE_COLUMNS if self.sections else TABLE_COLUMNS_3D)


def _open_prediction(prediction_path):
    """The prediction store's (z, y, x) probability array and its group; what is not one is refused."""
    if not Path(prediction_path).exists():
        raise InputDataError(f"{prediction_path}: no such prediction store")
    prediction = volume_store.open_store(prediction_path)
    if volume_store.IMAGE_PATH not in prediction:
        raise InputDataError(f"{prediction_path}: not a prediction store (no array {volume_store.IMAGE_PATH!r})")
    probabilities = prediction[volume_store.IMAGE_PATH]
    if probabilities.ndim != 3 or not (probabilities.dtype == np.uint8 or probabilities.dtype.kind == "f"):
        raise InputDataError(
            f"{prediction_path}: {volume_store.IMAGE_PATH} is {probabilities.dtype} of shape {probabilities.shape}, "
            "not a (z, y, x) probability array (uint8 or float)"
        )
    return prediction, probabilities


def _voxel_size(prediction) -> tuple:
    """The prediction's (z, y, x) pixel spacing, for the distance transform of 3D fragments."""
    multiscale = prediction.attrs["ome"]["multiscales"][0]
    return tuple(multiscale["datasets"][0]["coordinateTransformations"][0]["scale"])


def _signature(prediction, options: SegmentationOptions) -> dict:
    """What the work folder's contents depend on: the prediction (its provenance and shape) and the options."""
    info = volume_store.provenance(prediction)
    settings = {key: value for key, value in dataclasses.asdict(options).items() if key != "shards"}  # who, not what
    shape = list(prediction[volume_store.IMAGE_PATH].shape)
    return {"prediction": info, "shape": shape, "segmentation": json.loads(json.dumps(settings))}


def _segmenter(prediction_path, out_path, options: SegmentationOptions) -> tuple[Segmenter, object]:
    """The segmenter of a prediction store, its work folder opened (created, or continued); and the store."""
    prediction, probabilities = _open_prediction(prediction_path)
    work = SegmentWork(out_path, _signature(prediction, options), work_arrays(probabilities.shape, options))
    return Segmenter(probabilities, str(prediction_path), options, work, _voxel_size(prediction)), prediction


def segment_shard(prediction_path, out_path, options: SegmentationOptions, shard: int, shards: int) -> int:
    """One of ``shards`` jobs that share a segmentation (``segmentation.shards``): its part of the work goes into
    the work folder, where the segment job (``segment_volume``) finds it. Returns the sections or blocks done."""
    segmenter, _ = _segmenter(prediction_path, out_path, options)
    try:
        done = segmenter.run_shard(shard, shards)
    except InputDataError:
        segmenter.work.remove()
        raise
    segmenter.work.release()
    log.info(
        "segmentation shard %d of %d of %s: %d %s",
        shard,
        shards,
        prediction_path,
        done,
        "sections" if segmenter.sections else "blocks of fragments",
    )
    return done


def segment_volume(prediction_path, out_path, table_path, options: SegmentationOptions) -> dict:
    """Segment a prediction store into an OME-Zarr labels store and a per-cell CSV table, block by block.

    Cells are made by ``segmentation.volume.Segmenter`` with memory bounded by ``options.block``; what each
    step finished is kept beside the output (``segmentation.work``), so a killed run continues, and what shard
    jobs (``segment_shard``) did is used. The store and the table appear only when complete (``atomic``).

    Returns:
        The provenance recorded in the store: the segmentation options, cell count, source prediction.
    """
    segmenter, prediction = _segmenter(prediction_path, out_path, options)
    work = segmenter.work
    try:
        info, count = _write_cells(segmenter, prediction, out_path, table_path)
    except InputDataError:
        work.remove()  # the input is wrong: nothing in the work folder is worth continuing from
        raise
    work.remove()
    setting = f"{options.tuned} {options.setting}"
    per = "section" if segmenter.sections else "volume"
    log.info("segmented %s by %s at %s: %d cells (ids per %s)", prediction_path, options.method, setting, count, per)
    return info


def _write_cells(segmenter: Segmenter, prediction, out_path, table_path) -> tuple[dict, int]:
    """The labels store and the cell table, block by block from the segmenter; the provenance and cell count."""
    import zarr

    probabilities, options = segmenter.probabilities, segmenter.options
    shape = probabilities.shape
    with atomic_store(out_path) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        root.attrs["ome"] = {"version": volume_store.NGFF_VERSION, "labels": ["cells"]}
        cells_group = root.create_group("cells")
        labels = volume_store.create_level(cells_group, "0", shape, probabilities.chunks, "uint32")
        table = CellTable(segmenter.sections)
        for whole, numbering in segmenter.run():
            table.start(whole, int(numbering["ids"].max(initial=0)), len(segmenter.shape(whole)))
            for block in segmenter.grid(whole):
                cells = segmenter.cells(whole, numbering, block)
                labels[whole + block.inner] = cells
                table.add(block, cells)
            table.finish()
        write_pyramid(cells_group, "nearest")
        cells_group.attrs["ome"] = _label_attrs(prediction, 1 + len(level_shapes(shape, labels.chunks)))
        per = "section" if segmenter.sections else "volume"
        info = {"prediction": segmenter.path, "segmentation": dataclasses.asdict(options), "cells": len(table.rows)}
        info["ids"] = f"per {per}: 1..n in the order of each cell's first pixel; 0 = lines between cells, dropped cells"
        root.attrs[volume_store.PROVENANCE_KEY] = info
        with atomic_file(table_path) as table_tmp:
            table.frame().to_csv(table_tmp, index=False)
    return info, len(table.rows)


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
