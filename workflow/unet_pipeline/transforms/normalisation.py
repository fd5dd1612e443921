"""Input normalisation: the training set's, or one fitted to each predicted volume.

The network sees ``(x / 255 - mean) / std`` (``overlap_tile.normalise``) with the mean
and standard deviation of the training sections. A volume with another brightness or
contrast then reaches the network shifted and scaled. Per-volume normalisation maps
the volume's robust gray-value range, its ``PERCENTILES``, linearly onto the training
set's, which amounts to another mean and std in the same formula (``for_volume``).
The volume's percentiles come from a streamed sample (``sample_histogram``): a few
sections spread over the volume, a window of at most ``WINDOW`` pixels around each
centre, so the cost does not grow with the volume.

Fine-tuning starts from a network trained for another stack's gray values. With labels on
both sides, ``for_new_stack`` maps the new stack so that its membrane and cell means reach
the network where the starting stack's did (a contrast-inverted stack gets a negative std),
rather than keeping the starting model's mean and std.
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


def class_histograms(image_sections, label_sections) -> np.ndarray:
    """Counts (2, 256) of the gray values of background (label 0) and foreground (label > 0) pixels.

    Args:
        image_sections: uint8 sections (an iterable of arrays).
        label_sections: their labels, section by section (0 = background, membranes in ISBI 2012).

    Returns:
        Row 0 the background's counts, row 1 the foreground's; their sum is ``histogram(image_sections)``.
    """
    counts = np.zeros(2 * 256, np.int64)
    for image, labels in zip(image_sections, label_sections, strict=True):
        index = np.asarray(image, np.uint8).ravel() + 256 * (np.asarray(labels).ravel() > 0)
        counts += np.bincount(index, minlength=2 * 256)
    return counts.reshape(2, 256)


def means_of(class_counts: np.ndarray) -> list[float | None]:
    """The mean gray value (scaled to [0, 1]) of each class of ``class_histograms``; None for a class without
    pixels (JSON has no NaN)."""
    values = np.arange(256) / 255.0
    return [float(counts @ values / counts.sum()) if counts.sum() else None for counts in class_counts]


def class_means(image_sections, label_sections) -> list[float | None]:
    """``[background mean, foreground mean]`` of the sections' gray values (``means_of`` their ``class_histograms``)."""
    return means_of(class_histograms(image_sections, label_sections))


def for_new_stack(start: dict, new: dict) -> dict:
    """The normalisation of a fine-tuning run: ``new`` (the new stack's ``statistics`` and ``class_means``) with
    the mean and std that put its class means where ``start``'s network saw its own.

    The network sees z = (x - mean) / std. With the starting model's class means S (in its stack's gray values)
    and the new stack's N, requiring (N_k - mean') / std' = (S_k - mean) / std for both classes gives
    std' = std (N_fg - N_bg) / (S_fg - S_bg) and mean' = N_bg - std' (S_bg - mean) / std. When either side lacks
    two distinct class means (a model trained before they were recorded, a stack with one class), the new
    stack's own mean and std: the network then sees zero mean and unit variance, as it did in training.

    Returns:
        ``new`` with ``mean`` and ``std`` replaced (its ``percentiles`` and ``class_means`` stay the new stack's,
        so per-volume normalisation and a further fine-tuning start from them).
    """
    (s_bg, s_fg), (n_bg, n_fg) = start.get("class_means", [None] * 2), new.get("class_means", [None] * 2)
    if None in (s_bg, s_fg, n_bg, n_fg) or min(abs(s_fg - s_bg), abs(n_fg - n_bg)) < 1 / 255:
        return dict(new)
    std = start["std"] * (n_fg - n_bg) / (s_fg - s_bg)
    return new | {"mean": float(n_bg - std * (s_bg - start["mean"]) / start["std"]), "std": float(std)}


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
