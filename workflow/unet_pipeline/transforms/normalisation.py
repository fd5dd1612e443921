"""Input normalisation: the training set's, or one fitted to each predicted volume.

The network sees ``(x / 255 - mean) / std`` (``overlap_tile.normalise``) with the mean
and standard deviation of the training sections. A volume with another brightness or
contrast then reaches the network shifted and scaled. Per-volume normalisation maps
the volume's robust gray-value range, its ``PERCENTILES``, linearly onto the training
set's, which amounts to another mean and std in the same formula (``for_volume``).
The volume's percentiles come from a streamed sample (``sample_histogram``): a few
sections spread over the volume, a window of at most ``WINDOW`` pixels around each
centre, so the cost does not grow with the volume.
"""

from __future__ import annotations

import numpy as np

from ..core.errors import PipelineError

PERCENTILES = (1.0, 99.0)  # the robust range: outliers (saturated pixels, dust, borders) do not move it
SAMPLE_SECTIONS = 16
WINDOW = 2048


def histogram(sections) -> np.ndarray:
    """Counts of the 256 gray values of uint8 ``sections`` (an iterable of arrays)."""
    counts = np.zeros(256, np.int64)
    for section in sections:
        counts += np.bincount(np.asarray(section, np.uint8).ravel(), minlength=256)
    return counts


def percentiles(counts: np.ndarray, q=PERCENTILES) -> list[float]:
    """The gray values below which ``q`` percent of the counted pixels lie (the lowest value that reaches it)."""
    cumulative = np.cumsum(counts) / max(counts.sum(), 1)
    return [float(np.searchsorted(cumulative, p / 100.0)) for p in q]


def statistics(counts: np.ndarray) -> dict:
    """Mean and standard deviation of the counted gray values scaled to [0, 1], and their ``percentiles``."""
    values = np.arange(256) / 255.0
    total = max(counts.sum(), 1)
    mean = float(counts @ values / total)
    std = float(np.sqrt(counts @ (values - mean) ** 2 / total))
    return {"mean": mean, "std": max(std, 1e-3), "percentiles": percentiles(counts)}


def sample_histogram(image, sections: int = SAMPLE_SECTIONS, window: int = WINDOW) -> np.ndarray:
    """Gray-value counts of a sample of a (z, y, x) uint8 image, read one window at a time.

    Args:
        image: a (z, y, x) uint8 array (Zarr or numpy).
        sections: at most this many sections, evenly spread over z.
        window: at most ``window`` x ``window`` pixels around each section's centre.
    """
    depth, height, width = image.shape
    top, left = max((height - window) // 2, 0), max((width - window) // 2, 0)
    picked = np.unique(np.linspace(0, depth - 1, min(sections, depth)).round().astype(int))
    return histogram(image[int(z), top : top + window, left : left + window] for z in picked)


def for_volume(training: dict, volume_percentiles: list[float]) -> dict:
    """The mean and std that map the volume's percentiles onto the training set's, in ``normalise``'s formula.

    With training percentiles (t_lo, t_hi), volume percentiles (v_lo, v_hi) and s = (t_hi - t_lo) / (v_hi - v_lo),
    a gray value x becomes t_lo + (x - v_lo) s before the training normalisation, i.e.
    std' = std / s and mean' = (mean - (t_lo - v_lo s) / 255) / s.

    Raises:
        PipelineError: the model records no training percentiles (trained before they were recorded).
    """
    if "percentiles" not in training:
        raise PipelineError(
            "the model records no gray-value percentiles of its training set (it predates per-volume "
            "normalisation): retrain it, or predict with prediction.normalisation: training"
        )
    (t_lo, t_hi), (v_lo, v_hi) = training["percentiles"], volume_percentiles
    scale = (t_hi - t_lo) / max(v_hi - v_lo, 1.0)  # a flat volume: no stretching beyond one gray level
    mean = (training["mean"] - (t_lo - v_lo * scale) / 255.0) / scale
    return {"mean": float(mean), "std": float(training["std"] / scale)}
