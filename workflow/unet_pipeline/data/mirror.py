"""Mirrored context: reading any window of a section, reflecting at its edges.

Mirroring does not repeat the edge pixel (``np.pad`` mode ``reflect``, scipy
mode ``mirror``), as in the paper's overlap-tile strategy. Augmentation,
training validation and prediction all read context through here.
"""

from __future__ import annotations

import numpy as np


def mirror_indices(indices: np.ndarray, size: int) -> np.ndarray:
    """Map any integer positions into [0, size) by mirroring at the edges without repeating them."""
    if size == 1:
        return np.zeros_like(indices)
    period = 2 * (size - 1)
    folded = np.abs(indices) % period
    return np.where(folded >= size, period - folded, folded)


def read_mirrored(array, section: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Read ``array[section]`` (Zarr or NumPy) at integer ``rows`` x ``cols`` of any range, mirroring outside.

    Only the bounding window of the mirrored indices is read from the array.
    """
    height, width = array.shape[1:]
    rows, cols = mirror_indices(rows, height), mirror_indices(cols, width)
    block = np.asarray(array[section, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1])
    return block[np.ix_(rows - rows.min(), cols - cols.min())]
