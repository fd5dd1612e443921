"""Warping error (Jain et al. 2010) as the organisers' Fiji code computes it (``WarpingError.java``).

The ground truth is warped towards the binarised proposal by flipping only
simple points, pixels whose flip changes no topology; what still disagrees
afterwards are topological errors (splits, merges, added or deleted objects),
and their count over the number of pixels is the warping error of the section.

Fiji's conventions, kept here:

- truth: labels > 0 is foreground; proposal: probability > threshold (the float32
  value widened to double, as ``value <= threshold ? 0 : 1`` in Fiji); one pixel
  of background padding around the section;
- passes: the mismatching pixels are listed column by column (x outer), sorted by
  float32(|probability - threshold|) in descending order (a stable sort, so ties
  keep that order), and each is flipped if it is simple in the truth as warped so
  far (flips take effect at once); passes repeat until one flips nothing;
- simple point: Fiji embeds the 3x3 neighbourhood as the middle plane of a
  3x3x3 block with background above and below and applies Bertrand's 3D test
  with 6-adjacency for the foreground and 26 for the background
  (``_simple_in_plane``). In 2D this is the 4/8 test, except that any pixel with
  a background pixel in its 8-neighbourhood passes the background half of the
  test; a pixel surrounded by foreground is never simple (no holes are made).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import njit
from scipy import ndimage

_SIX = ndimage.generate_binary_structure(3, 1)
_TWENTY_SIX = ndimage.generate_binary_structure(3, 3)


def _simple_in_plane(patch: np.ndarray) -> bool:
    """Bertrand's test for the centre of a 3x3 patch placed as the middle plane of a 3x3x3 block.

    x is simple when T6(x, X) = 1 and T26(x, complement) = 1 (Bertrand and Malandain 1994):
    T6 counts the 6-components of the foreground in x's geodesic 18-neighbourhood (those
    18-neighbours 6-connected to x's 6-neighbours), T26 the 26-components of the background
    in its 26-neighbourhood. The centre's own value does not matter.
    """
    block = np.zeros((3, 3, 3), bool)
    block[1] = patch
    block[1, 1, 1] = False
    six = _SIX.copy()
    six[1, 1, 1] = False
    eighteen = ndimage.generate_binary_structure(3, 2)
    eighteen[1, 1, 1] = False
    seeds = block & six
    geodesic = ndimage.binary_propagation(seeds, structure=_SIX, mask=block & eighteen)
    t6 = ndimage.label(geodesic, structure=_SIX)[1]
    background = ~block
    background[1, 1, 1] = False
    t26 = ndimage.label(background, structure=_TWENTY_SIX)[1]
    return t6 == 1 and t26 == 1


@lru_cache(maxsize=1)
def simple_point_table() -> np.ndarray:
    """Whether each of the 512 binary 3x3 patches (bit k = row k // 3, column k % 3) has a simple centre."""
    bits = (np.arange(512)[:, None] >> np.arange(9)) & 1
    return np.array([_simple_in_plane(row.reshape(3, 3).astype(bool)) for row in bits])


@njit(cache=True)
def _patch_code(source, y, x):
    code = 0
    for k in range(9):
        code |= source[y - 1 + k // 3, x - 1 + k % 3] << k
    return code


@njit(cache=True)
def _warp(source, target, priority, table):
    """Flip simple mismatching pixels of ``source`` (padded, 0/1) until a pass flips none; returns mismatches."""
    height, width = source.shape
    while True:
        ys, xs, keys = [], [], []
        for x in range(1, width - 1):
            for y in range(1, height - 1):
                if source[y, x] != target[y, x]:
                    ys.append(y)
                    xs.append(x)
                    keys.append(-priority[y, x])
        if len(ys) == 0:
            return 0
        order = np.argsort(np.array(keys), kind="mergesort")
        flipped = 0
        for k in order:
            y, x = ys[k], xs[k]
            if table[_patch_code(source, y, x)]:
                source[y, x] = 1 - source[y, x]
                flipped += 1
        if flipped == 0:
            return len(ys)


def warping_mismatches(truth: np.ndarray, probability: np.ndarray, threshold: float) -> int:
    """Pixels that still disagree after warping the truth towards the proposal at ``threshold``.

    Args:
        truth: (y, x) labels, > 0 = cell interior.
        probability: (y, x) float32 foreground probability; compared in double with ``threshold``.
        threshold: the binarisation threshold (Fiji's double value, see ``scores.FIJI_THRESHOLDS``).

    Returns:
        The number of topological mismatches; divided by the pixel count it is the warping error.
    """
    wide = probability.astype(np.float64)
    source = np.pad((truth > 0).astype(np.uint8), 1)
    target = np.pad((wide > threshold).astype(np.uint8), 1)
    priority = np.pad(np.abs(wide - threshold).astype(np.float32), 1)
    return int(_warp(source, target, priority, simple_point_table()))
