"""The layout of a dataset's Zarr store, shared by every stage that reads or writes it.

``results/{dataset}/volume.zarr`` is an OME-Zarr 0.5 image (zarr v3), so napari
and other NGFF viewers open it directly::

    volume.zarr/            group: ome.multiscales + unet_pipeline provenance
      0                     image, uint8 (z, y, x)
      labels/cells/0        labels: uint8 0/1 (1 = foreground, i.e. cell interior)
                            or uint32 instance ids (0 = background)

A Zarr v3 source that already is uint8 (z, y, x) is not copied: ``0`` then holds
only its own ``zarr.json`` (the source's, with ``dimension_names``) and a link
``0/c`` to the source's chunk folder, so a TB volume is used in place (``ingest``).
Deleting the store removes the link, never the source.

Stores are written into a temporary sibling and renamed into place only when
complete (``atomic``), so an interrupted stage never leaves an output that looks
finished.
"""

from __future__ import annotations

import os

import numpy as np

IMAGE_PATH = "0"
LABELS_GROUP = "labels"
LABEL_NAME = "cells"
LABELS_PATH = f"{LABELS_GROUP}/{LABEL_NAME}/0"
PROVENANCE_KEY = "unet_pipeline"
NGFF_VERSION = "0.5"


def section_chunks(shape: tuple[int, ...], max_tile: int = 1024) -> tuple[int, ...]:
    """Chunks of one section in z, at most ``max_tile`` pixels along y and x."""
    return (1, *(min(n, max_tile) for n in shape[1:]))


AXES = ("z", "y", "x")


def create_level(group, path: str, shape, chunks, dtype):
    """A (z, y, x) array of an OME-Zarr image, with the ``dimension_names`` that OME-Zarr 0.5 requires."""
    return group.create_array(path, shape=tuple(shape), chunks=tuple(chunks), dtype=dtype, dimension_names=AXES)


def multiscales(name: str, voxel_size, unit: str | None, levels: int = 1) -> list[dict]:
    """OME-NGFF multiscales metadata of a (z, y, x) image with ``levels`` levels "0", "1", ...

    Level k is downsampled 2^k times in y and x (``pyramid``). ``voxel_size`` None (not configured):
    scale 1 per axis and no unit, rather than an invented physical size.
    """
    axis = {"type": "space"} if voxel_size is None or unit is None else {"type": "space", "unit": unit}
    scale = [1.0, 1.0, 1.0] if voxel_size is None else list(map(float, voxel_size))
    datasets = [
        {
            "path": str(level),
            "coordinateTransformations": [
                {"type": "scale", "scale": [scale[0], scale[1] * 2**level, scale[2] * 2**level]}
            ],
        }
        for level in range(levels)
    ]
    return [{"name": name, "axes": [{"name": name, **axis} for name in AXES], "datasets": datasets}]


def image_attrs(name: str, voxel_size, unit: str | None, levels: int = 1) -> dict:
    """The ``ome`` attributes of an OME-Zarr 0.5 image group."""
    return {"version": NGFF_VERSION, "multiscales": multiscales(name, voxel_size, unit, levels)}


PROBABILITY_DTYPES = ("uint8", "float16")


def encode_probability(probability: np.ndarray, dtype: str) -> np.ndarray:
    """Probabilities in [0, 1] as stored: uint8 (x255, rounded) or float16."""
    if dtype == "uint8":
        return np.rint(np.clip(probability, 0.0, 1.0) * 255.0).astype(np.uint8)
    return probability.astype(np.float16)


def decode_probability(stored: np.ndarray) -> np.ndarray:
    """Stored probabilities back to float32 in [0, 1]."""
    if stored.dtype == np.uint8:
        return stored.astype(np.float32) / 255.0
    return stored.astype(np.float32)


def open_store(path: str | os.PathLike, mode: str = "r"):
    """Open a dataset's volume store as a zarr group."""
    import zarr

    return zarr.open_group(str(path), mode=mode)


def provenance(group) -> dict:
    """The pipeline's provenance attributes of a volume store."""
    return dict(group.attrs[PROVENANCE_KEY])


def image_id(info: dict) -> str:
    """What identifies a volume's image for the stages that must match it (prediction input, evaluation).

    The sha256 of its pixels; for an image linked in place whose pixels were not hashed (no
    ``pixel_sha256`` configured: that would read the whole volume), its location and array metadata.
    """
    image = info["image"]
    if image["pixel_sha256"]:
        return image["pixel_sha256"]
    return f"linked:{image['linked']}@{image['metadata_sha256']}"
