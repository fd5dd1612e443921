"""Turn a dataset's image (and label) source into its OME-Zarr volume store.

The image becomes uint8 (z, y, x); binary labels become 0/1 with 1 = foreground
(cell interior) whatever the source's polarity; instance labels keep their ids.
Sections are validated and written one at a time, so memory does not grow with
the volume, and the store appears only once everything passed (see
``volume_store.atomic_store``).
"""

from __future__ import annotations

import hashlib
import logging
from contextlib import ExitStack, closing
from pathlib import Path

import numpy as np

from . import volume_store
from .checksums import verify_sha256
from .errors import InputDataError, PipelineError
from .readers import open_volume
from .sources import ROLES, parse_sections, resolve_source

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


def check_rescale(rescale, where: str) -> None:
    """A ``rescale`` of [low, high] must map a range of gray values: finite numbers with low < high."""
    if rescale is None:
        return
    low, high = map(float, rescale)
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise InputDataError(
            f"{where}: rescale [{low:g}, {high:g}] must have low < high (the values mapped to 0 and 255)"
        )


def to_uint8(section: np.ndarray, rescale, where: str) -> np.ndarray:
    """Convert an image section to uint8, refusing any silent loss of information.

    Without ``rescale`` the values must already be integers in 0..255. With
    ``rescale = [low, high]`` values are mapped linearly so that low -> 0 and
    high -> 255, clipping outside.
    """
    if rescale is not None:
        check_rescale(rescale, where)
        low, high = map(float, rescale)
        scaled = (section.astype(np.float64) - low) * (255.0 / (high - low))
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if section.dtype == np.uint8:
        return section
    if section.dtype.kind not in "biuf":
        raise InputDataError(f"{where}: dtype {section.dtype} cannot be converted to uint8")
    low, high = section.min(), section.max()
    integral = section.dtype.kind != "f" or bool(np.all(np.isfinite(section)) and np.all(section == np.round(section)))
    if not integral or low < 0 or high > 255:
        raise InputDataError(
            f"{where}: values {low}..{high} of dtype {section.dtype} do not fit uint8 without loss; "
            "set `rescale: [min, max]` on this image source to map them linearly to 0..255"
        )
    return section.astype(np.uint8)


def binary_labels(section: np.ndarray, foreground, background, where: str) -> np.ndarray:
    """Map a binary label section to 0/1 (1 = foreground); any third value is an error."""
    is_foreground = section == foreground
    unexpected = ~(is_foreground | (section == background))
    if unexpected.any():
        values = np.unique(section[unexpected])[:8].tolist()
        raise InputDataError(
            f"{where}: label values {values} are neither foreground ({foreground}) nor background ({background}); "
            "binary labels may hold only these two values (set `type: instance` for instance labels, "
            "or correct `foreground`/`background`)"
        )
    return is_foreground.astype(np.uint8)


def instance_labels(section: np.ndarray, where: str) -> np.ndarray:
    """Check and convert an instance-id section to uint32 (0 = background)."""
    if section.dtype.kind not in "biu":
        raise InputDataError(f"{where}: instance labels must be integers, found dtype {section.dtype}")
    if section.size and (section.min() < 0 or int(section.max()) > np.iinfo(np.uint32).max):
        raise InputDataError(f"{where}: instance ids must lie in 0..{np.iinfo(np.uint32).max}")
    return section.astype(np.uint32)


def _check_file_checksum(path: Path, spec: dict, remote: bool) -> None:
    """Verify a local file's sha256 (remote files were verified by the download rule)."""
    expected = spec.get("sha256")
    if not expected or remote:
        return
    if not path.is_file():
        raise PipelineError(f"{path}: `sha256` applies to single files; use `pixel_sha256` for folders and Zarr arrays")
    verify_sha256(path, expected, str(path))


def _copy_sections(reader, target, convert, what: str) -> str:
    """Convert and write every section; return the sha256 of the source pixels in C order."""
    digest = hashlib.sha256()
    for index in range(reader.shape[0]):
        section = reader.section(index)
        digest.update(np.ascontiguousarray(section).tobytes())
        target[index] = convert(section, f"{what}, section {index}")
    return digest.hexdigest()


def _check_pixel_checksum(actual: str, spec: dict, path: Path) -> None:
    expected = spec.get("pixel_sha256")
    if expected and expected.lower() != actual:
        raise InputDataError(f"{path}: pixel sha256 mismatch: expected {expected.lower()}, got {actual}")


def ingest(name: str, dataset: dict, image_path, labels_path, out_path) -> dict:
    """Write the volume store of dataset ``name`` and return its provenance attributes.

    ``image_path``/``labels_path`` are the local files of the dataset's sources:
    the download rule's output for a remote source, the source itself otherwise.
    """
    with ExitStack() as readers:
        return _ingest(name, dataset, image_path, labels_path, out_path, readers)


def _ingest(name, dataset, image_path, labels_path, out_path, readers: ExitStack) -> dict:
    import zarr

    sources = {role: resolve_source(dataset, role) for role in ROLES}
    image_spec = dataset["image"]
    labels_spec = dataset.get("labels")
    image_path = Path(image_path)
    check_rescale(image_spec.get("rescale"), f"{name}: image {image_path}")
    image_reader = readers.enter_context(closing(open_volume(image_path, image_spec.get("key"))))
    labels_reader = None
    if labels_spec:
        labels_path = Path(labels_path)
        labels_reader = readers.enter_context(closing(open_volume(labels_path, labels_spec.get("key"))))
        if labels_reader.shape != image_reader.shape:
            raise InputDataError(
                f"{labels_path}: label shape {labels_reader.shape} differs from image shape "
                f"{image_reader.shape} of {image_path}"
            )
    n_sections = image_reader.shape[0]
    sections = {
        split: parse_sections(dataset.get("sections", {}).get(split), n_sections, f"{name}: sections.{split}")
        for split in SPLITS
    }

    _check_file_checksum(image_path, image_spec, sources["image"].remote)
    if labels_reader:
        _check_file_checksum(labels_path, labels_spec, sources["labels"].remote)

    voxel_size, unit = dataset.get("voxel_size"), dataset.get("unit", "nanometer")
    if voxel_size is None:
        log.warning("%s: no voxel_size in the config; the store records scale 1 per axis and no unit", name)
        unit = None
    chunks = volume_store.section_chunks(image_reader.shape)
    with volume_store.atomic_store(out_path) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        image = root.create_array(volume_store.IMAGE_PATH, shape=image_reader.shape, chunks=chunks, dtype="uint8")
        rescale = image_spec.get("rescale")
        image_sha = _copy_sections(image_reader, image, lambda s, where: to_uint8(s, rescale, where), str(image_path))
        _check_pixel_checksum(image_sha, image_spec, image_path)
        attrs = {
            "dataset": name,
            "shape": list(image_reader.shape),
            "voxel_size": None if voxel_size is None else list(map(float, voxel_size)),
            "unit": unit,
            "sections": sections,
            "image": {
                "source": sources["image"].location,
                "file": str(image_path),
                "dtype": str(image_reader.dtype),
                "rescale": rescale,
                "sha256": image_spec.get("sha256"),
                "pixel_sha256": image_sha,
            },
            "labels": None,
        }
        if labels_reader:
            label_type = labels_spec.get("type", "binary")
            if label_type == "instance":
                convert, dtype = instance_labels, "uint32"
            else:
                foreground, background = labels_spec.get("foreground", 255), labels_spec.get("background", 0)
                convert, dtype = (lambda s, where: binary_labels(s, foreground, background, where)), "uint8"
            labels_group = root.create_group(volume_store.LABELS_GROUP)
            labels_group.attrs["ome"] = {"version": volume_store.NGFF_VERSION, "labels": [volume_store.LABEL_NAME]}
            cells = labels_group.create_group(volume_store.LABEL_NAME)
            cells.attrs["ome"] = {
                "version": volume_store.NGFF_VERSION,
                "multiscales": volume_store.multiscales(volume_store.LABEL_NAME, voxel_size, unit),
                "image-label": {"source": {"image": "../../"}},
            }
            labels = cells.create_array("0", shape=labels_reader.shape, chunks=chunks, dtype=dtype)
            labels_sha = _copy_sections(labels_reader, labels, convert, str(labels_path))
            _check_pixel_checksum(labels_sha, labels_spec, labels_path)
            attrs["labels"] = {
                "source": sources["labels"].location,
                "file": str(labels_path),
                "dtype": str(labels_reader.dtype),
                "type": label_type,
                "foreground": labels_spec.get("foreground", 255) if label_type == "binary" else None,
                "background": labels_spec.get("background", 0) if label_type == "binary" else None,
                "sha256": labels_spec.get("sha256"),
                "pixel_sha256": labels_sha,
            }
        root.attrs["ome"] = {
            "version": volume_store.NGFF_VERSION,
            "multiscales": volume_store.multiscales(name, voxel_size, unit),
        }
        root.attrs[volume_store.PROVENANCE_KEY] = attrs
    log.info(
        "wrote %s: %s sections of %s, labels: %s", out_path, n_sections, image_reader.shape[1:], bool(labels_reader)
    )
    return attrs
