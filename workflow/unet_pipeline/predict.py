"""Prediction stage: foreground probabilities of a whole volume, block by block.

The volume is processed one output chunk at a time. For each chunk the input
window it needs (the chunk plus the network's context and the last tile's
overshoot, mirrored at section borders) is read from Zarr, predicted with the
overlap-tile strategy (``overlap_tile.predict_region``) and written as one chunk.
Peak memory therefore depends on the chunk, tile and batch sizes, never on the
volume. A reader thread fetches the next windows and a writer thread stores
finished chunks while the model computes, so the GPU (or the CPU's cores) is not
left waiting for I/O.

Restarts: chunks are written into a work store beside the output, and a marker
file per chunk is created only after its chunk is stored. A rerun with the same
model and input skips every marked chunk; a half-written chunk has no marker and
is computed again. The work store is renamed to the output when all chunks are
done, so Snakemake never sees a partial prediction as finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from . import volume_store
from .checksums import sha256_of_file
from .devices import amp_dtype, pick_device
from .errors import InputDataError, PipelineError
from .mirror import read_mirrored
from .overlap_tile import input_extent, predict_region
from .unet import load_model
from .volume_store import PROBABILITY_DTYPES, decode_probability, encode_probability

log = logging.getLogger(__name__)

PREFETCH_BLOCKS = 2


def open_image(path, key: str | None = None):
    """The image array to predict: a dataset's volume store, a plain Zarr array, or ``key`` in a group."""
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as error:
        raise InputDataError(f"{path}: not a readable Zarr store: {error}") from error
    if isinstance(node, zarr.Group):
        node = node[key or volume_store.IMAGE_PATH]
    if node.ndim not in (2, 3):
        raise InputDataError(f"{path}: expected a 2D or 3D image (z, y, x), found shape {node.shape}")
    if node.dtype != np.uint8:
        raise InputDataError(
            f"{path}: expected uint8 gray values, found dtype {node.dtype} (ingest converts other types)"
        )
    return node


def _blocks(shape, chunks):
    """(z, top, bottom, left, right) of every output chunk, in storage order."""
    _, height, width = shape
    for z in range(shape[0]):
        for top in range(0, height, chunks[1]):
            for left in range(0, width, chunks[2]):
                yield z, top, min(top + chunks[1], height), left, min(left + chunks[2], width)


def _window_reader(image, z: int, region, geometry, input_size: int):
    """Read once the mirrored input window a block needs; return a tile reader over it."""
    rows, cols = input_extent(region, geometry, input_size)
    window = read_mirrored(image, z, rows, cols)

    def read(tile_rows: np.ndarray, tile_cols: np.ndarray) -> np.ndarray:
        return window[np.ix_(tile_rows - rows[0], tile_cols - cols[0])]

    return read


def prediction_signature(model_path, image, model_metadata: dict, tta: bool, dtype: str, input_size: int) -> str:
    """What a partial prediction must match to be continued."""
    described = {
        "model": model_metadata,
        "model_sha256": sha256_of_file(model_path),
        "shape": list(image.shape),
        "chunks": list(image.chunks),
        "tta": tta,
        "dtype": dtype,
        "input_size": input_size,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()


def predict_volume(
    model_path,
    image_path,
    out_path,
    batch_size: int = 4,
    device: str = "auto",
    amp: str = "bf16",
    tta: bool = False,
    dtype: str = "uint8",
    threads: int = 1,
    input_size: int | None = None,
    image_key: str | None = None,
) -> dict:
    """Predict every chunk of a (z, y, x) uint8 Zarr image into an OME-Zarr probability map.

    ``input_size`` overrides the model's training tile size (any legal size: larger
    tiles waste less context). Returns the output's provenance attributes.
    """
    import zarr

    if dtype not in PROBABILITY_DTYPES:
        raise PipelineError(f"output dtype must be one of {PROBABILITY_DTYPES}, not {dtype!r}")
    torch.set_num_threads(max(threads, 1))
    torch_device = pick_device(device)
    autocast_dtype = amp_dtype(amp, torch_device)
    model, metadata = load_model(model_path, torch_device)
    if torch_device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    geometry = model.config.geometry
    input_size = input_size or metadata["input_size"]
    step = geometry.tile_step(input_size)  # an illegal size is a clear error here

    image = open_image(image_path, image_key)
    image3d = image if image.ndim == 3 else _AsStack(image)
    shape = image3d.shape
    chunks = (1, *volume_store.section_chunks(shape)[1:])
    out_path = Path(out_path)
    work = out_path.with_name(f".{out_path.name}.partial")
    signature = prediction_signature(model_path, image3d, metadata, tta, dtype, input_size)
    done_dir = work / ".done"
    if work.exists():
        try:
            same = volume_store.open_store(work).attrs.get("signature") == signature
        except (OSError, ValueError, KeyError):  # an unreadable work store (zarr's not-found errors are both)
            same = False
        if not same:
            log.info("discarding %s: it belongs to another model or input", work)
            shutil.rmtree(work)
    if not work.exists():
        root = zarr.open_group(str(work), mode="w", zarr_format=3)
        root.create_array(volume_store.IMAGE_PATH, shape=shape, chunks=chunks, dtype=dtype)
        root.attrs["signature"] = signature
        done_dir.mkdir()
    target = volume_store.open_store(work, mode="r+")[volume_store.IMAGE_PATH]

    blocks = [
        block for block in _blocks(shape, chunks) if not (done_dir / "{}_{}_{}".format(*block[:2], block[3])).exists()
    ]
    total = sum(1 for _ in _blocks(shape, chunks))
    log.info(
        "predicting %d of %d chunks of %s with %s on %s (tiles %d -> %d, step %d%s)",
        len(blocks),
        total,
        shape,
        Path(model_path).name,
        torch_device,
        input_size,
        geometry.output_size(input_size),
        step,
        ", TTA" if tta else "",
    )

    def fetch(block):
        z, top, bottom, left, right = block
        return block, _window_reader(image3d, z, (top, bottom, left, right), geometry, input_size)

    def store(block, probability):
        z, top, bottom, left, right = block
        target[z : z + 1, top:bottom, left:right] = encode_probability(probability, dtype)[None]
        (done_dir / f"{z}_{top}_{left}").touch()

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as readers, ThreadPoolExecutor(max_workers=1) as writer:
        pending = [readers.submit(fetch, block) for block in blocks[:PREFETCH_BLOCKS]]
        writes = []
        for index in range(len(blocks)):
            block, read = pending.pop(0).result()
            if index + PREFETCH_BLOCKS < len(blocks):
                pending.append(readers.submit(fetch, blocks[index + PREFETCH_BLOCKS]))
            probability = predict_region(
                model,
                read,
                block[1:],
                geometry,
                input_size,
                metadata["normalisation"],
                torch_device,
                batch_size,
                autocast_dtype,
                tta,
            )
            writes.append(writer.submit(store, block, probability))
            while writes and (writes[0].done() or len(writes) > PREFETCH_BLOCKS):
                writes.pop(0).result()  # re-raises a failed write; bounds the chunks waiting in memory
        for write in writes:
            write.result()
    elapsed = time.perf_counter() - started

    voxels = int(np.prod(shape))
    info = {
        "model": str(model_path),
        "model_metadata": metadata,
        "input": str(image_path),
        "input_shape": list(shape),
        "probability_of": "foreground (cell interior)",
        "dtype": dtype,
        "encoding": "probability * 255, rounded" if dtype == "uint8" else "probability",
        "tta": tta,
        "input_size": input_size,
        "tile_step": step,
        "device": str(torch_device),
        "seconds": elapsed,
        "chunks_computed": len(blocks),
    }
    root = volume_store.open_store(work, mode="r+")
    source_info = _source_provenance(image_path)
    if source_info:
        info["input_pixel_sha256"] = source_info["image"]["pixel_sha256"]
        voxel_size, unit = source_info["voxel_size"], source_info["unit"]
    else:
        log.warning(
            "%s is not an ingested volume store: the prediction records no input checksum and no voxel size", image_path
        )
        voxel_size, unit = None, None
    root.attrs["ome"] = {
        "version": volume_store.NGFF_VERSION,
        "multiscales": volume_store.multiscales("probability", voxel_size, unit),
    }
    root.attrs[volume_store.PROVENANCE_KEY] = info
    shutil.rmtree(done_dir)
    if out_path.exists():
        shutil.rmtree(out_path)
    os.replace(work, out_path)
    log.info("wrote %s: %.1f megavoxels in %.1f s", out_path, voxels / 1e6, elapsed)
    return info


class _AsStack:
    """A 2D array seen as a one-section (1, y, x) stack."""

    def __init__(self, array):
        self.array = array
        self.shape = (1, *array.shape)
        self.chunks = (1, *array.chunks)
        self.dtype = array.dtype

    def __getitem__(self, key):
        return self.array[key[1:]]


def _source_provenance(image_path) -> dict | None:
    """The pipeline provenance of the input when it is an ingested volume store; None for other Zarr inputs."""
    import zarr

    node = zarr.open(str(image_path), mode="r")
    if isinstance(node, zarr.Group) and volume_store.PROVENANCE_KEY in node.attrs:
        return volume_store.provenance(node)
    return None


def write_submission_tiff(prediction_path, tiff_path) -> None:
    """The ISBI 2012 submission format: a multi-page float32 TIFF of probabilities in [0, 1].

    Sections are written one page at a time (memory stays at one section) into a
    temporary file that is renamed into place when complete.
    """
    import tifffile

    probabilities = volume_store.open_store(prediction_path)[volume_store.IMAGE_PATH]
    with volume_store.atomic_file(tiff_path) as tmp, tifffile.TiffWriter(tmp) as tiff:
        for section in range(probabilities.shape[0]):
            tiff.write(decode_probability(probabilities[section]), photometric="minisblack", contiguous=True)
