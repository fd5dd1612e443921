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
import re
from pathlib import Path

import numpy as np

from ..core.errors import InputDataError

IMAGE_SUFFIXES = (".tif", ".tiff", ".png")
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")


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
    """A folder of equally sized 2D TIFF or PNG images, one per section, in natural name order."""

    def __init__(self, path: str | Path, channel: int | None = None):
        self.path, self.channel = Path(path), channel
        self.files = sorted((p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
        if not self.files:
            raise InputDataError(f"{self.path}: folder holds no {'/'.join(IMAGE_SUFFIXES)} images")
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

    def section(self, index: int) -> np.ndarray:
        file = self.files[index]
        data = self._read(file)
        if data.shape != self.shape[1:] or data.dtype != self.dtype:
            raise InputDataError(
                f"{file}: shape {data.shape} and dtype {data.dtype} differ from the folder's first image "
                f"{self.files[0].name} ({self.shape[1:]}, {self.dtype})"
            )
        return data

    def close(self) -> None:
        pass


class ZarrVolume:
    """A 2D or 3D Zarr array; in a group, the array named by ``key``, the first OME-Zarr level, or the only array."""

    def __init__(self, path: str | Path, key: str | None = None):
        import zarr

        self.path = Path(path)
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


class Hdf5Volume:
    """A 2D or 3D dataset of an HDF5 file: the one named by ``key``, or the file's only dataset."""

    def __init__(self, path: str | Path, key: str | None = None):
        import h5py

        self.path = Path(path)
        try:
            self._file = h5py.File(self.path, "r")
        except Exception as error:
            raise read_error(self.path, error, "not a readable HDF5 file (corrupt or truncated?)") from error
        names = []
        self._file.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
        if key is None and len(names) != 1:
            self._file.close()
            raise InputDataError(f"{self.path}: HDF5 file holds datasets {names}; name one with `key:` in the source")
        key = key if key is not None else names[0]
        if key not in self._file or not isinstance(self._file[key], h5py.Dataset):
            self._file.close()
            raise InputDataError(f"{self.path}: no dataset {key!r} in this HDF5 file (it holds {names})")
        self._dataset = self._file[key]
        if self._dataset.ndim not in (2, 3):
            self._file.close()
            raise InputDataError(f"{self.path}: dataset {key!r} has shape {self._dataset.shape}, expected (z, y, x)")
        self.shape = (1, *self._dataset.shape) if self._dataset.ndim == 2 else tuple(self._dataset.shape)
        self.dtype = np.dtype(self._dataset.dtype)

    def section(self, index: int) -> np.ndarray:
        try:
            return np.asarray(self._dataset[index] if self._dataset.ndim == 3 else self._dataset[()])
        except Exception as error:
            raise read_error(self.path, error, f"section {index} cannot be read (corrupt file?)") from error

    def close(self) -> None:
        self._file.close()


SECTION_COPIES = 4  # a section in memory at once: as read, as gray/uint8, its checksum bytes, a writer's copy


def check_section_size(reader, path: Path, memory_bytes: int) -> None:
    """Refuse a volume whose declared sections the job cannot hold, before any is read.

    A tiny damaged or hostile file can declare sections of 200000 x 200000 (as Pillow's ``MAX_IMAGE_PIXELS``
    guards against for PNG): the header is all that is read here.
    """
    itemsize = np.dtype(reader.dtype).itemsize * getattr(reader, "samples_per_pixel", 1)
    needed = math.prod(reader.shape[1:]) * itemsize * SECTION_COPIES
    if needed > memory_bytes:
        size = " x ".join(str(n) for n in reader.shape[1:])
        raise InputDataError(
            f"{path}: declares {reader.shape[0]} sections of {size} {reader.dtype} ({needed / SECTION_COPIES / 1e9:.2f} "
            f"GB each), more than this job's memory ({memory_bytes / 1e6:.0f} MB) holds; if the file is real, raise "
            "the rule's mem_mb (snakemake --set-resources RULE:mem_mb=N)"
        )


def open_volume(path: str | Path, key: str | None = None, channel: int | None = None, **options):
    """Open a TIFF stack, image folder, Zarr array or HDF5 dataset as a section reader.

    Args:
        path: the file or folder.
        key: the array in a Zarr group or HDF5 file.
        channel: the channel of color images (``to_gray``).
        options: ``axes`` ("zyx": a TIFF's color samples are sections, ``TiffStack``) and ``memory_bytes`` (the
            job's memory: a volume whose sections it cannot hold is refused before reading, ``check_section_size``).
    """
    reader = _open(Path(path), key, channel, options.get("axes"))
    memory_bytes = options.get("memory_bytes")
    if memory_bytes is not None:
        try:
            check_section_size(reader, Path(path), memory_bytes)
        except InputDataError:
            reader.close()
            raise
    return reader


def _open(path: Path, key: str | None, channel: int | None, axes: str | None):
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
        return ImageFolder(path, channel)
    if path.suffix.lower() in (".tif", ".tiff"):
        return TiffStack(path, channel, axes)
    if path.suffix.lower() in HDF5_SUFFIXES:
        return Hdf5Volume(path, key)
    raise InputDataError(
        f"{path}: unsupported source; expected a .tif/.tiff stack, a folder of 2D images, a .zarr array "
        f"or an HDF5 file ({'/'.join(HDF5_SUFFIXES)})"
    )
