"""Turn a dataset's image (and label) source into its OME-Zarr volume store.

The image becomes uint8 (z, y, x); binary labels become 0/1 with 1 = foreground
(cell interior) whatever the source's polarity; instance labels keep their ids.
With ``resample_to``, sections are resampled to that pixel size as they are written
(``transforms.resampling``); checksums are of the source's pixels.
Sections are validated and written one at a time, so memory does not grow with
the volume, and the store appears only once everything passed (see
``atomic.atomic_store``).

A local Zarr v3 image that already is uint8 (z, y, x) with the default chunk keys
is not copied but linked (``volume_store`` docstring): only its metadata and the
first and last section are read, and its pixels are hashed only when the config
gives a ``pixel_sha256`` to verify. ``link: false`` on the image source copies it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from contextlib import ExitStack, closing
from pathlib import Path

import numpy as np

from ..core.atomic import atomic_store
from ..core.checksums import verify_sha256
from ..core.errors import InputDataError, PipelineError
from ..core.progress import Progress
from ..data import volume_store
from ..data.readers import MemoryLimit, ZarrVolume, open_volume
from ..data.sources import ROLES, parse_sections, resolve_source
from ..transforms.resampling import resampled_image, resampled_labels, resampled_shape, working_bytes

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
        bad = int(np.count_nonzero(~np.isfinite(section))) if section.dtype.kind == "f" else 0
        if bad:
            raise InputDataError(
                f"{where}: {bad} pixels are NaN or infinite, which rescale cannot map to a gray value; "
                "replace them in the source (a mask or a fill value)"
            )
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


def binary_labels(section: np.ndarray, classes: dict, where: str) -> np.ndarray:
    """Map a binary label section to 0/1 (1 = foreground).

    Args:
        section: the label values.
        classes: ``foreground`` and ``background`` values, and ``threshold`` (None: any third value is an
            error; a number: values above it are the class of the larger of the two, the rest the other's,
            for anti-aliased edges).
        where: file and section, for errors.
    """
    foreground, background, threshold = classes["foreground"], classes["background"], classes.get("threshold")
    if threshold is not None:
        if section.dtype.kind == "f" and not np.isfinite(section).all():
            bad = int(np.count_nonzero(~np.isfinite(section)))
            raise InputDataError(
                f"{where}: {bad} label values are NaN or infinite, which belong to neither class; replace them "
                "in the source (NaN would fall below the threshold and become a class)"
            )
        above = section > threshold
        return (above if foreground > background else ~above).astype(np.uint8)
    is_foreground = section == foreground
    unexpected = ~(is_foreground | (section == background))
    if unexpected.any():
        values = np.unique(section[unexpected])[:8].tolist()
        raise InputDataError(
            f"{where}: label values {values} are neither foreground ({foreground}) nor background ({background}); "
            "binary labels may hold only these two values (set `type: instance` for instance labels, correct "
            "`foreground`/`background`, or set `threshold` on the labels source to split anti-aliased edges)"
        )
    return is_foreground.astype(np.uint8)


def check_threshold(classes: dict, where: str) -> None:
    """A labels ``threshold`` must lie between the background and foreground values."""
    threshold, low, high = classes.get("threshold"), *sorted((classes["foreground"], classes["background"]))
    if threshold is not None and not low <= threshold < high:
        raise InputDataError(
            f"{where}: labels threshold {threshold} must lie in [{low}, {high}) between background and foreground"
        )


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
    """Convert and write every section (only hash them when ``target`` is None); return the sha256 of the
    source pixels in C order."""
    digest = hashlib.sha256()
    progress = Progress(reader.shape[0], f"ingest {what}: sections", log)
    for index in range(reader.shape[0]):
        section = reader.section(index)
        digest.update(np.ascontiguousarray(section).tobytes())
        if target is not None:
            target[index] = convert(section, f"{what}, section {index}")
        progress.update()
    return digest.hexdigest()


def _check_pixel_checksum(actual: str, spec: dict, path: Path) -> None:
    expected = spec.get("pixel_sha256")
    if expected and expected.lower() != actual:
        raise InputDataError(f"{path}: pixel sha256 mismatch: expected {expected.lower()}, got {actual}")


def ingest(name: str, dataset: dict, image_path, labels_path, out_path, memory: MemoryLimit | None = None) -> dict:
    """Write the volume store of dataset ``name`` and return its provenance attributes.

    ``image_path``/``labels_path`` are the local files of the dataset's sources:
    the download rule's output for a remote source, the source itself otherwise.
    ``memory``: the job's (``readers.MemoryLimit``); a source whose sections it cannot hold is refused before
    anything is decoded.
    """
    import zarr

    image_path = Path(image_path)
    labels_path = Path(labels_path) if dataset.get("labels") else None
    check_rescale(dataset["image"].get("rescale"), f"{name}: image {image_path}")
    with ExitStack() as readers:
        image_reader, labels_reader = _open_readers(dataset, (image_path, labels_path), readers, memory)
        sections = {
            split: parse_sections(
                dataset.get("sections", {}).get(split), image_reader.shape[0], f"{name}: sections.{split}"
            )
            for split in SPLITS
        }
        scale, shape = _scale(name, dataset), image_reader.shape
        if dataset.get("resample_to"):
            shape = resampled_shape(shape, scale["voxel_size"], dataset["resample_to"], f"{name}: {image_path}")
            if memory is not None:  # a far upsampling of large sections: refused before anything is decoded
                needed = working_bytes(image_reader.shape[1:], shape[1:])
                memory.check(image_path, needed, f"resampling a section to {list(shape[1:])}")
            scale = _resampled_scale(name, scale, dataset["resample_to"], image_reader.shape, shape)
        with atomic_store(out_path) as tmp:
            root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
            attrs = {"dataset": name, "shape": list(shape), **scale, "sections": sections}
            linked = _linkable_array(image_reader, dataset)
            if linked:
                attrs["image"] = _link_image(Path(tmp), linked, image_reader, dataset, image_path)
            else:
                attrs["image"] = _write_image(root, image_reader, dataset, image_path, shape)
            if labels_reader:
                attrs["labels"] = _write_labels(root, labels_reader, dataset, labels_path, scale, shape)
            else:
                attrs["labels"] = None
            root.attrs["ome"] = {
                "version": volume_store.NGFF_VERSION,
                "multiscales": volume_store.multiscales(name, scale["voxel_size"], scale["unit"]),
            }
            root.attrs[volume_store.PROVENANCE_KEY] = attrs
    log.info("wrote %s: %s sections of %s, labels: %s", out_path, shape[0], shape[1:], bool(labels_reader))
    return attrs


def _open_reader(spec: dict, path: Path, readers: ExitStack, memory):
    reader = open_volume(path, spec.get("key"), spec.get("channel"), axes=spec.get("axes"), memory=memory)
    return readers.enter_context(closing(reader))


def _open_readers(dataset: dict, paths: tuple, readers: ExitStack, memory):
    """Section readers of image and labels (None without labels), shapes and file checksums checked."""
    image_path, labels_path = paths
    sources = {role: resolve_source(dataset, role) for role in ROLES}
    image_reader = _open_reader(dataset["image"], image_path, readers, memory)
    labels_reader = None
    if labels_path is not None:
        labels_reader = _open_reader(dataset["labels"], labels_path, readers, memory)
        if labels_reader.shape != image_reader.shape:
            raise InputDataError(
                f"{labels_path}: label shape {labels_reader.shape} differs from image shape "
                f"{image_reader.shape} of {image_path}"
            )
    _check_file_checksum(image_path, dataset["image"], sources["image"].remote)
    if labels_reader:
        _check_file_checksum(labels_path, dataset["labels"], sources["labels"].remote)
    return image_reader, labels_reader


def _scale(name: str, dataset: dict) -> dict:
    """Voxel size and unit as configured; without ``voxel_size`` none is invented (logged)."""
    voxel_size = dataset.get("voxel_size")
    if voxel_size is None:
        log.warning("%s: no voxel_size in the config; the store records scale 1 per axis and no unit", name)
        return {"voxel_size": None, "unit": None}
    return {"voxel_size": list(map(float, voxel_size)), "unit": dataset.get("unit", "nanometer")}


def _resampled_scale(name: str, scale: dict, resample_to, source_shape, shape) -> dict:
    """The voxel size of a store resampled at ingest (``resample_to``), and the one it was resampled from."""
    log.info(
        "%s: sections of %s resampled to %s (pixels of %s -> %s %s)",
        name,
        list(source_shape[1:]),
        list(shape[1:]),
        scale["voxel_size"][1:],
        list(map(float, resample_to)),
        scale["unit"],
    )
    voxel_size = [scale["voxel_size"][0], *map(float, resample_to)]
    return scale | {"voxel_size": voxel_size, "resampled_from": scale["voxel_size"]}


def _write_image(root, reader, dataset: dict, path: Path, shape) -> dict:
    """The uint8 image array at ``shape`` (the source's, or ``resample_to``'s); returns its provenance."""
    spec, rescale = dataset["image"], dataset["image"].get("rescale")
    chunks = volume_store.section_chunks(shape)
    image = volume_store.create_level(root, volume_store.IMAGE_PATH, shape, chunks, "uint8")

    def convert(section, where):
        return resampled_image(to_uint8(section, rescale, where), shape[1:])

    pixel_sha = _copy_sections(reader, image, convert, str(path))  # the source's pixels, before resampling
    _check_pixel_checksum(pixel_sha, spec, path)
    source = resolve_source(dataset, "image").public
    return {
        "source": source,
        "file": str(path),
        "dtype": str(reader.dtype),
        "rescale": rescale,
        "sha256": spec.get("sha256"),
        "pixel_sha256": pixel_sha,
    }


def _linkable_array(reader, dataset: dict) -> Path | None:
    """The folder of the source array when the image can be used in place, else None (it is copied)."""
    spec = dataset["image"]
    converted = spec.get("rescale") is not None or dataset.get("resample_to")
    if not isinstance(reader, ZarrVolume) or not spec.get("link", True) or converted:
        return None
    array = reader.array
    root = getattr(array.store_path.store, "root", None)  # a LocalStore: a folder on this file system
    encoding = array.metadata.chunk_key_encoding if array.metadata.zarr_format == 3 else None
    if root is None or array.ndim != 3 or array.dtype != np.uint8 or encoding is None:
        return None
    if encoding.name != "default" or encoding.separator != "/":
        return None
    return (Path(root) / array.store_path.path).resolve()


def _link_image(tmp: Path, array_dir: Path, reader, dataset: dict, path: Path) -> dict:
    """Level 0 as the source's own metadata (with ``dimension_names``) and a link to its chunks; returns provenance."""
    spec = dataset["image"]
    for index in {0, reader.shape[0] - 1}:  # a codec or file-system problem shows now, not in a later stage
        reader.section(index)
    pixel_sha = None
    if spec.get("pixel_sha256"):  # the user asked for the pixels to be verified: read them once, write nothing
        pixel_sha = _copy_sections(reader, None, None, str(path))
        _check_pixel_checksum(pixel_sha, spec, path)
    metadata = (array_dir / "zarr.json").read_bytes()
    level = tmp / volume_store.IMAGE_PATH
    level.mkdir()
    own = json.loads(metadata) | {"dimension_names": list(volume_store.AXES), "attributes": {}}
    (level / "zarr.json").write_text(json.dumps(own, indent=2))
    (level / "c").symlink_to(array_dir / "c", target_is_directory=True)
    log.info("%s: uint8 (z, y, x) Zarr v3 array used in place (linked, not copied)", array_dir)
    provenance = {"source": resolve_source(dataset, "image").public, "file": str(path), "dtype": "uint8"}
    provenance |= {"rescale": None, "sha256": spec.get("sha256"), "pixel_sha256": pixel_sha}
    return provenance | {"linked": str(array_dir), "metadata_sha256": hashlib.sha256(metadata).hexdigest()}


def _write_labels(root, reader, dataset: dict, path: Path, scale: dict, shape) -> dict:
    """The labels as an OME-Zarr image-label (0/1 uint8, or uint32 instance ids) at ``shape``; returns their
    provenance."""
    spec = dataset["labels"]
    label_type = spec.get("type", "binary")
    binary = label_type == "binary"
    foreground, background = (spec.get("foreground", 255), spec.get("background", 0)) if binary else (None, None)
    classes = {"foreground": foreground, "background": background, "threshold": spec.get("threshold")}
    if binary:
        check_threshold(classes, str(path))
        labels_of, dtype = (lambda s, where: binary_labels(s, classes, where)), "uint8"
    else:
        labels_of, dtype = instance_labels, "uint32"

    def convert(section, where):
        return resampled_labels(labels_of(section, where), shape[1:])

    group = root.create_group(volume_store.LABELS_GROUP)
    group.attrs["ome"] = {"version": volume_store.NGFF_VERSION, "labels": [volume_store.LABEL_NAME]}
    cells = group.create_group(volume_store.LABEL_NAME)
    cells.attrs["ome"] = volume_store.image_attrs(volume_store.LABEL_NAME, scale["voxel_size"], scale["unit"]) | {
        "image-label": {"source": {"image": "../../"}}
    }
    labels = volume_store.create_level(cells, "0", shape, volume_store.section_chunks(shape), dtype)
    pixel_sha = _copy_sections(reader, labels, convert, str(path))
    _check_pixel_checksum(pixel_sha, spec, path)
    provenance = {"source": resolve_source(dataset, "labels").public, "file": str(path), "dtype": str(reader.dtype)}
    provenance |= {"type": label_type, "foreground": foreground, "background": background}
    provenance |= {"threshold": classes["threshold"]} if classes["threshold"] is not None else {}
    return provenance | {"sha256": spec.get("sha256"), "pixel_sha256": pixel_sha}
