"""Read a source volume one section at a time, whatever form it comes in.

A source is a multi-page TIFF stack, a folder of 2D TIFF/PNG images, a Zarr
array or an HDF5 dataset. Each reader exposes the stack's ``shape`` (z, y, x)
and ``dtype`` and returns one 2D section at a time, so that volumes larger than
memory stream through ingest. Every failure names the file and says what is
wrong.

Sections saved with color or alpha channels (gray + alpha, RGB, RGBA: what many
tools write for gray images) are read as gray when that loses nothing: every
color channel equal and the alpha fully opaque (``to_gray``). Otherwise the
source's ``channel:`` option picks one channel.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import InputDataError

IMAGE_SUFFIXES = (".tif", ".tiff", ".png")
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
SECTION_COPIES = 4  # a section in memory at once: as read, as gray/uint8, its checksum bytes, a writer's copy
ZARR_CONCURRENCY = 10  # chunks zarr-python decodes at once (its default ``async.concurrency``)


@dataclass(frozen=True)
class MemoryLimit:
    """What a job may spend on reading a source: ``bytes``, from the rule's ``mem_mb``, and ``rule``, named in the
    error as the setting that raises it."""

    bytes: int
    rule: str

    @classmethod
    def of_job(cls, mem_mb: int, rule: str) -> MemoryLimit:
        return cls(int(mem_mb) * 2**20, rule)

    def check(self, path, needed: int, what: str) -> None:
        """Refuse ``what`` of ``path`` when reading it needs more than the limit (nothing was decoded yet)."""
        if needed > self.bytes:
            raise InputDataError(
                f"{path}: {what} needs {needed / 1e6:.0f} MB to read, more than this job's memory "
                f"({self.bytes / 1e6:.0f} MB) allows; if the file is real, raise the {self.rule} rule's memory "
                f"(snakemake --set-resources {self.rule}:mem_mb=N)"
            )


def read_error(where, error: BaseException, damaged: str) -> InputDataError:
    """What went wrong reading ``where``, said as what it is: the job's memory, the file system, Pillow's
    decompression-bomb guard, or (``damaged``) the file itself. A mirror list moves on only for the last."""
    if isinstance(error, MemoryError):
        return InputDataError(f"{where}: out of memory while reading it; give the job more memory (mem_mb)")
    if type(error).__name__ == "DecompressionBombError":
        return InputDataError(f"{where}: refused by Pillow's decompression-bomb guard ({error})")
    if isinstance(error, OSError) and error.errno is not None:
        return InputDataError(f"{where}: I/O error while reading it ({error.strerror or error}): the file system")
    return InputDataError(f"{where}: {damaged}: {error}")


def to_gray(data: np.ndarray, where: str, channel: int | None = None) -> np.ndarray:
    """A 2D section from (y, x), or (y, x, c) with c = 2 (gray + alpha), 3 (RGB) or 4 (RGBA) channels.

    Args:
        data: the section as read.
        where: the file (and section) named in errors.
        channel: the channel to use; None: the data must be gray already, or its color channels equal
            and its alpha (if any) fully opaque.
    """
    if data.ndim == 2:
        return data
    if data.ndim != 3 or data.shape[-1] not in (2, 3, 4):
        raise InputDataError(f"{where}: expected a 2D grayscale image, found shape {data.shape}")
    if channel is not None:
        if not 0 <= channel < data.shape[-1]:
            raise InputDataError(f"{where}: channel {channel} does not exist (the image has {data.shape[-1]})")
        return data[..., channel]
    colors = data[..., :1] if data.shape[-1] == 2 else data[..., :3]
    if data.shape[-1] in (2, 4):
        opaque = np.iinfo(data.dtype).max if data.dtype.kind in "iu" else 1.0
        if (data[..., -1] != opaque).any():
            raise InputDataError(
                f"{where}: the alpha channel is not fully opaque; set `channel:` in the source config to the "
                "channel to use (0 = first)"
            )
    if (colors != colors[..., :1]).any():
        raise InputDataError(
            f"{where}: the color channels differ (not a gray image); set `channel:` in the source config to the "
            "channel to use (0 = red or gray)"
        )
    return np.ascontiguousarray(colors[..., 0])


def _natural_key(path: Path):
    """Sort ``img2.png`` before ``img10.png``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


class TiffStack:
    """A multi-page TIFF (or a single 2D TIFF) holding a (z, y, x) stack, gray or with samples read as gray.

    ``axes="zyx"``: a single page of 3 or 4 samples (what ``tifffile.imwrite`` makes of a uint8 stack of 3 or 4
    sections without ``photometric='minisblack'``) is read as that many sections.
    """

    def __init__(self, path: str | Path, channel: int | None = None, axes: str | None = None):
        import tifffile

        self.path, self.channel = Path(path), channel
        try:
            self._tiff = tifffile.TiffFile(self.path)
            series = self._tiff.series[0]
            shape, dtype = tuple(series.shape), np.dtype(series.dtype)
        except Exception as error:  # tifffile raises many types on damaged files
            raise read_error(self.path, error, "not a readable TIFF file (corrupt or truncated?)") from error
        self.samples_as_sections = axes == "zyx" and series.axes in ("SYX", "YXS")
        if self.samples_as_sections:
            self.samples, self.samples_per_pixel = False, 1
            self._samples_axis = series.axes.index("S")
            shape = (shape[self._samples_axis], *(n for axis, n in zip(series.axes, shape) if axis != "S"))
        else:
            self.samples = series.axes.endswith("S")
            self.samples_per_pixel = shape[-1] if self.samples else 1
            shape = shape[:-1] if self.samples else shape
        if len(shape) == 2:
            shape = (1, *shape)
        if len(shape) != 3 or (not self.samples_as_sections and ("S" in series.axes[:-1] or "C" in series.axes)):
            raise InputDataError(
                f"{self.path}: expected a stack of 2D sections (z, y, x), optionally with color samples last, "
                f"found shape {series.shape} with axes {series.axes!r}"
                + (
                    "; if these are sections stored as color samples (tifffile.imwrite of a stack of 3 or 4 "
                    "sections without photometric='minisblack'), set `axes: zyx` on this source"
                    if "S" in series.axes
                    else ""
                )
            )
        self.shape, self.dtype = shape, dtype

    def section(self, index: int) -> np.ndarray:
        try:
            data = self._tiff.asarray(key=0 if self.samples_as_sections else index, series=0)
        except Exception as error:
            raise read_error(self.path, error, f"section {index} cannot be decoded (corrupt TIFF?)") from error
        if self.samples_as_sections:
            return np.take(data, index, axis=self._samples_axis)
        if self.samples:
            return to_gray(data.reshape(*self.shape[1:], -1), f"{self.path} (section {index})", self.channel)
        return data.reshape(self.shape[1:])

    def close(self) -> None:
        self._tiff.close()


class ImageFolder:
    """A folder of equally sized 2D TIFF or PNG images, one per section, in natural name order.

    Any other file in it is refused (an error page saved as a section would otherwise vanish from the stack);
    hidden files (a name starting with '.') are passed over. Each image's header is checked, against
    ``memory`` and the first image's size, before the image is decoded.
    """

    def __init__(self, path: str | Path, channel: int | None = None, memory: MemoryLimit | None = None):
        self.path, self.channel, self.memory = Path(path), channel, memory
        entries = sorted((p for p in self.path.iterdir() if not p.name.startswith(".")), key=_natural_key)
        others = [p.name for p in entries if p.suffix.lower() not in IMAGE_SUFFIXES or not p.is_file()]
        if others:
            raise InputDataError(
                f"{self.path}: {others[:5]} {'is' if len(others) == 1 else 'are'} not a TIFF or PNG image; a folder "
                f"source holds only its sections ({'/'.join(IMAGE_SUFFIXES)})"
            )
        self.files = entries
        if not self.files:
            raise InputDataError(f"{self.path}: folder holds no {'/'.join(IMAGE_SUFFIXES)} images")
        self._check_header(self.files[0], None)
        first = self._read(self.files[0])
        self.shape = (len(self.files), *first.shape)
        self.dtype = first.dtype

    def _read(self, file: Path) -> np.ndarray:
        try:
            if file.suffix.lower() == ".png":
                import imageio.v3 as iio

                data = iio.imread(file)
            else:
                import tifffile

                data = tifffile.imread(file)
        except Exception as error:
            raise read_error(file, error, "not a readable image (corrupt or truncated?)") from error
        return to_gray(data, str(file), self.channel)

    def _check_header(self, file: Path, size: tuple | None) -> None:
        """Before ``file`` is decoded: its declared pixels fit the job's memory, and its height and width are
        ``size`` (the first image's)."""
        height, width, samples, itemsize = image_header(file)
        if size is not None and (height, width) != size:
            raise InputDataError(
                f"{file}: declares {height} x {width} pixels, unlike the folder's first image {self.files[0].name} "
                f"({size[0]} x {size[1]})"
            )
        if self.memory is not None:
            self.memory.check(file, height * width * samples * itemsize * SECTION_COPIES, "this section")

    def section(self, index: int) -> np.ndarray:
        file = self.files[index]
        self._check_header(file, self.shape[1:])
        data = self._read(file)
        if data.shape != self.shape[1:] or data.dtype != self.dtype:
            raise InputDataError(
                f"{file}: shape {data.shape} and dtype {data.dtype} differ from the folder's first image "
                f"{self.files[0].name} ({self.shape[1:]}, {self.dtype})"
            )
        return data

    def close(self) -> None:
        pass


def image_header(file: Path) -> tuple[int, int, int, int]:
    """(height, width, samples per pixel, bytes per sample) of a 2D TIFF or PNG, from its header alone."""
    try:
        if file.suffix.lower() == ".png":
            from PIL import Image

            with Image.open(file) as image:  # lazy: reads the header, decodes nothing
                width, height = image.size
                samples = len(image.getbands())
                itemsize = 2 if image.mode.startswith("I;16") else 4 if image.mode in ("I", "F") else 1
                samples = 4 if image.mode == "P" else samples  # a palette is expanded to RGB(A) on reading
            return height, width, samples, itemsize
        import tifffile

        with tifffile.TiffFile(file) as tiff:
            series = tiff.series[0]
            shape, axes, itemsize = tuple(series.shape), series.axes, np.dtype(series.dtype).itemsize
    except Exception as error:
        raise read_error(file, error, "not a readable image (corrupt or truncated?)") from error
    samples = shape[-1] if axes.endswith("S") else 1
    plane = shape[:-1] if axes.endswith("S") else shape
    if len(plane) != 2:
        raise InputDataError(f"{file}: expected a 2D image, found shape {shape} with axes {axes!r}")
    return plane[0], plane[1], samples, itemsize


class ZarrVolume:
    """A 2D or 3D Zarr array; in a group, the array named by ``key``, the first OME-Zarr level, or the only array."""

    def __init__(self, path: str | Path, key: str | None = None):
        import zarr

        self.path = Path(path)
        if key is not None and ".." in Path(key).parts:
            raise InputDataError(f"{self.path}: key {key!r} leads out of the Zarr store")
        check_no_links_out(self.path)
        try:
            node = zarr.open(str(self.path), mode="r")
        except Exception as error:
            raise read_error(self.path, error, "not a readable Zarr store") from error
        if isinstance(node, zarr.Group):
            node = self._pick_array(node, key)
        if node.ndim not in (2, 3):
            raise InputDataError(f"{self.path}: expected a 2D or 3D array (z, y, x), found shape {node.shape}")
        self.array = node
        self.shape = (1, *node.shape) if node.ndim == 2 else tuple(node.shape)
        self.dtype = np.dtype(node.dtype)
        self.decode_bytes = chunks_per_section(self.shape, node.chunks, self.dtype, ZARR_CONCURRENCY)

    def _pick_array(self, group, key):
        import zarr

        if key is not None:
            if key not in group:
                raise InputDataError(f"{self.path}: no array {key!r} in this Zarr group")
            return group[key]
        multiscales = group.attrs.get("ome", group.attrs).get("multiscales")
        if multiscales:
            return group[multiscales[0]["datasets"][0]["path"]]
        arrays = [name for name, item in group.members() if isinstance(item, zarr.Array)]
        if len(arrays) != 1:
            raise InputDataError(
                f"{self.path}: Zarr group holds arrays {sorted(arrays)}; name one with `key:` in the source config"
            )
        return group[arrays[0]]

    def section(self, index: int) -> np.ndarray:
        try:
            return np.asarray(self.array[index] if self.array.ndim == 3 else self.array[:])
        except Exception as error:
            raise read_error(self.path, error, f"section {index} cannot be read (corrupt chunk?)") from error

    def close(self) -> None:
        pass


def check_no_links_out(root: Path) -> None:
    """Refuse a store with a file or folder that is a link to somewhere outside it: its bytes would be read as
    pixels (a chunk linked to a file of the machine). Links within the store are fine."""
    top = root.resolve()
    for folder, subfolders, files in os.walk(top):
        for name in (*subfolders, *files):
            entry = Path(folder) / name
            if entry.is_symlink() and not entry.resolve().is_relative_to(top):
                raise InputDataError(
                    f"{root}: {entry.relative_to(top)} is a link to {os.readlink(entry)}, outside the Zarr store; "
                    "refused (copy the data into the store)"
                )


def chunks_per_section(shape: tuple, chunks: tuple, dtype, at_once: int) -> int:
    """Bytes of the chunks decoded at once to read one section (z, y, x) of an array chunked ``chunks``."""
    chunks = (1, *chunks) if len(chunks) == 2 else tuple(chunks)
    per_section = math.ceil(shape[1] / chunks[1]) * math.ceil(shape[2] / chunks[2])
    return math.prod(chunks) * np.dtype(dtype).itemsize * min(per_section, at_once)


class Hdf5Volume:
    """A 2D or 3D dataset of an HDF5 file: the one named by ``key``, or the file's only dataset."""

    def __init__(self, path: str | Path, key: str | None = None):
        import h5py

        self.path = Path(path)
        try:
            self._file = h5py.File(self.path, "r")
        except Exception as error:
            raise read_error(self.path, error, "not a readable HDF5 file (corrupt or truncated?)") from error
        try:
            self._open_dataset(key)
        except InputDataError:
            self._file.close()
            raise
        except Exception as error:  # h5py raises RuntimeError, KeyError, ValueError... on damaged structures
            self._file.close()
            raise read_error(self.path, error, "HDF5 structure cannot be read (corrupt file?)") from error

    def _open_dataset(self, key: str | None) -> None:
        """Check the file's links, find the dataset, and learn its shape, dtype and chunks (nothing decoded)."""
        import h5py

        self._refuse_outside_references()
        names = []
        self._file.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
        if key is None and len(names) != 1:
            raise InputDataError(f"{self.path}: HDF5 file holds datasets {names}; name one with `key:` in the source")
        key = key if key is not None else names[0]
        if key not in self._file or not isinstance(self._file[key], h5py.Dataset):
            raise InputDataError(f"{self.path}: no dataset {key!r} in this HDF5 file (it holds {names})")
        self._dataset = self._file[key]
        if self._dataset.ndim not in (2, 3):
            raise InputDataError(f"{self.path}: dataset {key!r} has shape {self._dataset.shape}, expected (z, y, x)")
        self.shape = (1, *self._dataset.shape) if self._dataset.ndim == 2 else tuple(self._dataset.shape)
        self.dtype = np.dtype(self._dataset.dtype)
        chunks = self._dataset.chunks  # h5py decodes a whole chunk, one at a time, and keeps its filter's buffer
        self.decode_bytes = 2 * chunks_per_section(self.shape, chunks, self.dtype, 1) if chunks else 0

    def _refuse_outside_references(self) -> None:
        """External links, external storage and virtual datasets read other files of the machine as pixels."""
        import h5py

        found = []

        def visit(name, link):
            if isinstance(link, h5py.ExternalLink):
                found.append(f"{name!r} is an external link to {link.filename}")
                return
            item = self._file.get(name)
            if isinstance(item, h5py.Dataset) and item.external:
                found.append(f"dataset {name!r} keeps its data in external files {[e[0] for e in item.external]}")
            elif isinstance(item, h5py.Dataset) and item.is_virtual:
                found.append(f"dataset {name!r} is virtual (its data lives in other files)")

        self._file.visititems_links(visit)
        if found:
            raise InputDataError(f"{self.path}: {found[0]}; refused: a source is read from its own file only")

    def section(self, index: int) -> np.ndarray:
        try:
            return np.asarray(self._dataset[index] if self._dataset.ndim == 3 else self._dataset[()])
        except Exception as error:
            raise read_error(self.path, error, f"section {index} cannot be read (corrupt file?)") from error

    def close(self) -> None:
        self._file.close()


def check_section_size(reader, path: Path, memory: MemoryLimit) -> None:
    """Refuse a volume whose declared sections, and the chunks decoded to read one, the job cannot hold, before
    any is read.

    A tiny damaged or hostile file can declare sections of 200000 x 200000, or chunks of 40 x 2000 x 2000 behind
    each section: the header and metadata are all that is read here.
    """
    itemsize = np.dtype(reader.dtype).itemsize * getattr(reader, "samples_per_pixel", 1)
    section = math.prod(reader.shape[1:]) * itemsize
    size = " x ".join(str(n) for n in reader.shape[1:])
    what = f"each of its {reader.shape[0]} sections of {size} {reader.dtype}"
    memory.check(path, section * SECTION_COPIES + getattr(reader, "decode_bytes", 0), what)


def open_volume(path: str | Path, key: str | None = None, channel: int | None = None, **options):
    """Open a TIFF stack, image folder, Zarr array or HDF5 dataset as a section reader.

    Args:
        path: the file or folder.
        key: the array in a Zarr group or HDF5 file.
        channel: the channel of color images (``to_gray``).
        options: ``axes`` ("zyx": a TIFF's color samples are sections, ``TiffStack``) and ``memory`` (a
            ``MemoryLimit``: a volume whose sections the job cannot hold is refused before reading,
            ``check_section_size``).
    """
    memory = options.get("memory")
    reader = _open(Path(path), key, channel, options.get("axes"), memory)
    if memory is not None:
        try:
            check_section_size(reader, Path(path), memory)
        except InputDataError:
            reader.close()
            raise
    return reader


def _open(path: Path, key: str | None, channel: int | None, axes: str | None, memory: MemoryLimit | None):
    if not path.exists():
        raise InputDataError(f"{path}: no such file or folder")
    is_zarr = (
        path.suffix == ".zarr"
        or (path / "zarr.json").exists()
        or (path / ".zarray").exists()
        or (path / ".zgroup").exists()
    )
    if is_zarr:
        return ZarrVolume(path, key)
    if path.is_dir():
        return ImageFolder(path, channel, memory)
    if path.suffix.lower() in (".tif", ".tiff"):
        return TiffStack(path, channel, axes)
    if path.suffix.lower() in HDF5_SUFFIXES:
        return Hdf5Volume(path, key)
    raise InputDataError(
        f"{path}: unsupported source; expected a .tif/.tiff stack, a folder of 2D images, a .zarr array "
        f"or an HDF5 file ({'/'.join(HDF5_SUFFIXES)})"
    )
