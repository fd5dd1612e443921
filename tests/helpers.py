"""Helpers the tests share (fixtures stay in conftest.py)."""

from __future__ import annotations

import numpy as np


def png_summary(path) -> tuple[tuple[int, int], int]:
    """(height, width) of a PNG and the number of distinct colours in it: a blank figure has a handful."""
    from matplotlib.image import imread

    pixels = imread(path)
    return pixels.shape[:2], len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0))
