"""Brute-force weight map of the U-Net paper: one full-image distance transform per cell.

Kept deliberately naive, as the ground truth for the fast implementation in
unet_pipeline.weight_maps (tests and benchmarks/weight_map_speed.py use it).
"""

import numpy as np
from scipy import ndimage


def brute_force_border_weight(cells: np.ndarray, w0: float = 10.0, sigma: float = 5.0) -> np.ndarray:
    ids = [i for i in np.unique(cells) if i != 0]
    if len(ids) < 2:
        return np.zeros(cells.shape, dtype=np.float32)
    distances = np.stack([ndimage.distance_transform_edt(cells != i) for i in ids])
    distances.sort(axis=0)
    d1, d2 = distances[0], distances[1]
    weight = w0 * np.exp(-((d1 + d2) ** 2) / (2.0 * sigma**2))
    return np.where(cells == 0, weight, 0.0).astype(np.float32)
