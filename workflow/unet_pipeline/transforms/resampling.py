"""Sections brought to another pixel size (a dataset's ``resample_to``), as nnU-Net brings data to its training
spacing: a model predicts best at the pixel size it was trained on (``benchmarks/resampling.py``).

Image and labels of a section go through the same coordinate mapping (scikit-image's ``resize``), so they stay
aligned: the image by linear interpolation, with a Gaussian anti-aliasing filter where it shrinks; labels by
nearest neighbour, so that binary labels stay 0/1 and instance ids stay ids.
"""

from __future__ import annotations

import numpy as np

from ..core.errors import InputDataError

# A factor beyond these would make sections of a few pixels, or a volume many times the source's.
SMALLEST_FACTOR, LARGEST_FACTOR = 1 / 8, 8.0


def resampled_shape(shape, voxel_size, resample_to, where: str) -> tuple[int, int, int]:
    """The (z, y, x) shape of a volume of ``shape`` with (z, y, x) ``voxel_size`` at (y, x) pixel size
    ``resample_to``; sections keep their z.

    Raises:
        InputDataError: without a voxel size, or a factor outside [``SMALLEST_FACTOR``, ``LARGEST_FACTOR``].
    """
    if voxel_size is None:
        raise InputDataError(f"{where}: resample_to needs the dataset's voxel_size (z, y, x) to resample from")
    factors = np.asarray(voxel_size[1:], np.float64) / np.asarray(resample_to, np.float64)
    if not np.all((factors >= SMALLEST_FACTOR) & (factors <= LARGEST_FACTOR)):
        raise InputDataError(
            f"{where}: resample_to {list(resample_to)} from pixels of {list(voxel_size[1:])} scales the sections by "
            f"{factors.round(4).tolist()}; allowed: {SMALLEST_FACTOR:g} to {LARGEST_FACTOR:g}"
        )
    height, width = (max(1, round(side * factor)) for side, factor in zip(shape[1:], factors))
    return (shape[0], height, width)


def working_bytes(source: tuple[int, int], target: tuple[int, int]) -> int:
    """The memory resampling one section takes: scikit-image works in float64, on an anti-aliased copy of the
    source and on the output."""
    return 8 * (source[0] * source[1] + target[0] * target[1])


def resampled_image(section: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A uint8 (y, x) section at ``shape``: linear, anti-aliased where it shrinks, rounded."""
    from skimage.transform import resize

    if section.shape == tuple(shape):
        return section
    values = resize(section, shape, order=1, anti_aliasing=None, preserve_range=True)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def resampled_labels(section: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A label section (0/1 or instance ids) at ``shape``, nearest neighbour, its dtype kept."""
    from skimage.transform import resize

    if section.shape == tuple(shape):
        return section
    values = resize(section, shape, order=0, anti_aliasing=False, preserve_range=True)
    return values.astype(section.dtype)
