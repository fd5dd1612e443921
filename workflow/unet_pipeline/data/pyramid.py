"""Multiscale pyramids of (z, y, x) OME-Zarr images, so that viewers open large results at any zoom.

Level k halves level k-1 in y and x (z is kept: sections are independent), until a
whole section fits in one chunk of level 0. Probabilities are averaged over 2x2
pixels; labels take the top-left pixel of each 2x2 block, so ids stay ids. Levels
are written tile by tile, one output chunk at a time, so memory stays at a few
chunks whatever the volume's size.
"""

from __future__ import annotations

import numpy as np

from . import volume_store


def level_shapes(shape, chunks) -> list[tuple[int, int, int]]:
    """Shapes of the levels after level 0: halved (rounding up) until y and x fit in one chunk."""
    shapes, (depth, height, width) = [], shape
    while height > chunks[1] or width > chunks[2]:
        height, width = -(-height // 2), -(-width // 2)
        shapes.append((depth, height, width))
    return shapes


def _halve(block: np.ndarray, reduce: str) -> np.ndarray:
    """One (y, x) block at half resolution; an odd edge repeats its last row or column."""
    if reduce == "nearest":
        return block[::2, ::2]
    padded = np.pad(block, [(0, block.shape[0] % 2), (0, block.shape[1] % 2)], mode="edge").astype(np.float32)
    mean = (padded[::2, ::2] + padded[1::2, ::2] + padded[::2, 1::2] + padded[1::2, 1::2]) / 4
    return np.rint(mean).astype(block.dtype) if block.dtype.kind in "iu" else mean.astype(block.dtype)


def write_pyramid(group, reduce: str) -> int:
    """Write levels "1", "2", ... of the image at ``group["0"]``; returns the number of levels incl. level 0.

    Args:
        group: a zarr group (writable) holding the (z, y, x) level "0".
        reduce: ``mean`` (probabilities, weights) or ``nearest`` (labels).
    """
    source = group["0"]
    chunks = source.chunks
    for level, shape in enumerate(level_shapes(source.shape, chunks), start=1):
        target = volume_store.create_level(group, str(level), shape, chunks, source.dtype)
        for z in range(shape[0]):
            for top in range(0, shape[1], chunks[1]):
                for left in range(0, shape[2], chunks[2]):
                    bottom, right = min(top + chunks[1], shape[1]), min(left + chunks[2], shape[2])
                    block = source[z, 2 * top : 2 * bottom, 2 * left : 2 * right]
                    target[z, top:bottom, left:right] = _halve(block, reduce)[: bottom - top, : right - left]
        source = target
    return 1 + len(level_shapes(group["0"].shape, chunks))
