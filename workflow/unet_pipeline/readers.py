"""Read a source volume one section at a time, whatever form it comes in.

A source is a multi-page TIFF stack, a folder of 2D TIFF/PNG images or a Zarr
array. Each reader exposes the stack's ``shape`` (z, y, x) and ``dtype`` and
returns one 2D section at a time, so that volumes larger than memory stream
through ingest. Every failure names the file and says what is wrong.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .errors import InputDataError

IMAGE_SUFFIXES = (".tif", ".tiff", ".png")


def _natural_key(path: Path):
    """Sort ``img2.png`` before ``img10.png``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


class TiffStack:
    """A multi-page TIFF (or a single 2D TIFF) holding a grayscale (z, y, x) stack."""

    def __init__(self, path: str | Path):
        import tifffile

        self.path = Path(path)
        try:
            self._tiff = tifffile.TiffFile(self.path)
            series = self._tiff.series[0]
            shape, dtype = tuple(series.shape), np.dtype(series.dtype)
        except Exception as error:  # tifffile raises many types on damaged files
            raise InputDataError(f"{self.path}: not a readable TIFF file (corrupt or truncated?): {error}") from error
        if len(shape) == 2:
            shape = (1, *shape)
        if len(shape) != 3 or "S" in series.axes:
            raise InputDataError(
                f"{self.path}: expected a grayscale stack of 2D sections (z, y, x), "
                f"found shape {shape} with axes {series.axes!r} (multi-channel or RGB data is not supported)"
            )
        self.shape, self.dtype = shape, dtype

    def section(self, index: int) -> np.ndarray:
        try:
            data = self._tiff.asarray(key=index, series=0)
        except Exception as error:
            raise InputDataError(f"{self.path}: section {index} cannot be decoded (corrupt TIFF?): {error}") from error
        return data.reshape(self.shape[1:])

    def close(self) -> None:
        self._tiff.close()


class ImageFolder:
    """A folder of equally sized 2D TIFF or PNG images, one per section, in natural name order."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
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
            raise InputDataError(f"{file}: not a readable image (corrupt or truncated?): {error}") from error
        if data.ndim != 2:
            raise InputDataError(f"{file}: expected a 2D grayscale image, found shape {data.shape}")
        return data

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
            raise InputDataError(f"{self.path}: not a readable Zarr store: {error}") from error
        if isinstance(node, zarr.Group):
            node = self._pick_array(node, key)
        if node.ndim not in (2, 3):
            raise InputDataError(f"{self.path}: expected a 2D or 3D array (z, y, x), found shape {node.shape}")
        self._array = node
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
            return np.asarray(self._array[index] if self._array.ndim == 3 else self._array[:])
        except Exception as error:
            raise InputDataError(f"{self.path}: section {index} cannot be read (corrupt chunk?): {error}") from error

    def close(self) -> None:
        pass


def open_volume(path: str | Path, key: str | None = None):
    """Open a TIFF stack, image folder or Zarr array as a section reader."""
    path = Path(path)
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
        return ImageFolder(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        return TiffStack(path)
    raise InputDataError(
        f"{path}: unsupported source; expected a .tif/.tiff stack, a folder of 2D images or a .zarr array"
    )
