"""Segmentation scores of a foreground probability map against binary labels.

``pixel_error`` is the paper's (Table 1). ``v_rand_skimage`` is the Rand F-score
of scikit-image's ``adapted_rand_error`` on the 4-connected cells of the
thresholded prediction and of the labels; it serves training validation. It is
not the organisers' exact ISBI 2012 V_rand (which thins borders and counts
border pixels of the proposal as singletons).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


def pixel_error(probability: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> float:
    """Fraction of pixels whose thresholded class differs from the labels."""
    return float(np.mean((probability > threshold) != (labels > 0)))


def v_rand_skimage(probability: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> float:
    """1 - adapted Rand error between the 4-connected cells of prediction and labels."""
    from skimage.metrics import adapted_rand_error

    truth, _ = ndimage.label(labels > 0, structure=FOUR_CONNECTED)
    proposal, _ = ndimage.label(probability > threshold, structure=FOUR_CONNECTED)
    error, _, _ = adapted_rand_error(truth, proposal)
    return float(1.0 - error)
