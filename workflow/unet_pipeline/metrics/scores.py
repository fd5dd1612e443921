"""Per-section scores at each threshold, in the arithmetic of the organisers' Fiji code.

Every quantity follows ``RandError``, ``VariationOfInformation``, ``PixelError`` and
``WarpingError`` of Trainable_Segmentation (see the package docstring for the
definitions); the counts each row carries are what the stack summaries pool.
"""

from __future__ import annotations

import math

import numpy as np

from .thinning import thinned_cells, unthinned_cells
from .warping import warping_mismatches


def _fiji_thresholds(start=0.0, stop=1.0, step=0.1) -> tuple[float, ...]:
    """Fiji's ``for (th = min; th <= max; th += step)`` in double: 0.30000000000000004, ..., 0.9999999999999999."""
    values, th = [], start
    while th <= stop:
        values.append(th)
        th += step
    return tuple(values)


FIJI_THRESHOLDS = _fiji_thresholds()
# The label of each threshold in tables and JSON (0.3 for 0.30000000000000004); comparisons use the Fiji value.
THRESHOLDS = tuple(round(th, 6) for th in FIJI_THRESHOLDS)
FIJI_VALUE = dict(zip(THRESHOLDS, FIJI_THRESHOLDS))
# The operating threshold when no validation sections exist to choose one (training selects its checkpoint at 0.5).
FIXED_THRESHOLD = 0.5


def fscore(tp: float, fp: float, fn: float) -> tuple[float, float, float]:
    """Precision, recall and F-score as Fiji's ``ClassificationStatistics`` (no fp: precision 1; no fn: recall 1)."""
    precision = 1.0 if fp == 0 else tp / (tp + fp)
    recall = 1.0 if fn == 0 else tp / (tp + fn)
    if math.isnan(precision) or math.isnan(recall):
        return precision, recall, math.nan
    return precision, recall, (2.0 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0)


def _overlap(truth: np.ndarray, proposal: np.ndarray):
    """p_ij over truth foreground (i > 0): the joint fractions with j > 0, a_i, b_j, sum_i p_i0, and n.

    None when the truth has no foreground (n = 0).
    """
    inside = truth > 0
    n = float(np.count_nonzero(inside))
    if n == 0:
        return None
    t, p = truth[inside].astype(np.int64), proposal[inside].astype(np.int64)
    if t.max() > t.size:  # sparse ids (instance labels): make them compact for bincount
        _, t = np.unique(t, return_inverse=True)
    joint = np.bincount(t[p > 0] * (int(p.max(initial=0)) + 1) + p[p > 0])
    p_ij = joint[joint > 0] / n
    a_i = np.bincount(t)
    a_i = a_i[a_i > 0] / n
    b_j = np.bincount(p[p > 0])
    b_j = b_j[b_j > 0] / n
    aux = np.count_nonzero(p == 0) / n
    return p_ij, a_i, b_j, aux, n


def rand_counts(truth: np.ndarray, proposal: np.ndarray) -> dict:
    """Foreground-restricted Rand pair counts (tp, fp, fn) with proposal label 0 as singletons, Fiji's N^2 form."""
    overlap = _overlap(truth, proposal)
    if overlap is None:
        return {"tp": math.nan, "fp": math.nan, "fn": math.nan}
    p_ij, a_i, b_j, aux, n = overlap
    n2 = n * n
    tp = n2 * (float(np.sum(p_ij * p_ij)) + aux / n)
    return {"tp": tp, "fp": n2 * (float(np.sum(b_j * b_j)) + aux / n) - tp, "fn": n2 * float(np.sum(a_i * a_i)) - tp}


def information_scores(truth: np.ndarray, proposal: np.ndarray) -> dict:
    """V_info with its split (I / H(proposal)) and merge (I / H(truth)) parts, as Fiji computes them."""
    overlap = _overlap(truth, proposal)
    if overlap is None:
        return {"v_info": math.nan, "v_info_split": math.nan, "v_info_merge": math.nan}
    p_ij, a_i, b_j, aux, n = overlap
    log_n = math.log(n)
    sum_a = float(np.sum(a_i * np.log(a_i)))
    sum_b = float(np.sum(b_j * np.log(b_j))) - aux * log_n
    sum_ab = float(np.sum(p_ij * np.log(p_ij))) - aux * log_n
    h_truth, h_proposal = -sum_a, -sum_b
    merge = (h_truth - (sum_b - sum_ab)) / h_truth if h_truth != 0 else 0.0
    split = (h_proposal - (sum_a - sum_ab)) / h_proposal if h_proposal != 0 else 1.0
    if h_truth == 0:  # Fiji: one true cell scores 0 whatever the proposal
        merge, split = 0.0, 1.0
    if h_proposal == 0:
        merge, split = 1.0, 0.0
    f = 2.0 * merge * split / (merge + split) if merge + split != 0 else math.nan
    return {"v_info": f, "v_info_split": split, "v_info_merge": merge}


def pixel_counts(truth: np.ndarray, foreground: np.ndarray) -> dict:
    """Pixel classification counts of the foreground (cell interior)."""
    cell = truth > 0
    tp = int(np.count_nonzero(cell & foreground))
    fp = int(np.count_nonzero(foreground)) - tp
    fn = int(np.count_nonzero(cell)) - tp
    return {"tp": tp, "fp": fp, "fn": fn, "tn": cell.size - tp - fp - fn}


def _prefixed(prefix: str, values: dict) -> dict:
    return {f"{prefix}_{key}": value for key, value in values.items()}


def threshold_row(truth: np.ndarray, probability: np.ndarray, threshold: float) -> dict:
    """Every per-section score and count at one threshold (the label; Fiji's double value is compared)."""
    value = FIJI_VALUE.get(threshold, threshold)
    foreground = probability.astype(np.float64) > value
    thinned = thinned_cells(foreground)
    rand = rand_counts(truth, thinned)
    merge, split, v_rand = fscore(rand["tp"], rand["fp"], rand["fn"])
    table1 = rand_counts(truth, unthinned_cells(foreground))
    return {
        "threshold": threshold,
        "v_rand": v_rand,
        "v_rand_split": split,
        "v_rand_merge": merge,
        **information_scores(truth, thinned),
        "rand_fscore": fscore(table1["tp"], table1["fp"], table1["fn"])[2],
        "warping_error": warping_mismatches(truth, probability, value) / truth.size,
        **_prefixed("vrand", rand),
        **_prefixed("rand", table1),
        **_prefixed("pixel", pixel_counts(truth, foreground)),
    }


def section_scores(probability: np.ndarray, truth: np.ndarray, thresholds=THRESHOLDS) -> list[dict]:
    """Every score of one section at every threshold.

    Args:
        probability: (y, x) float32 foreground (cell interior) probability in [0, 1].
        truth: (y, x) true cells, 0 = background (``cells.cells_of``).
        thresholds: threshold labels (``THRESHOLDS``); each is compared as Fiji's double value.

    Returns:
        One dict per threshold (``threshold_row``).
    """
    return [threshold_row(truth, probability, threshold) for threshold in thresholds]


def validation_scores(probability: np.ndarray, truth: np.ndarray, threshold: float = FIXED_THRESHOLD) -> dict:
    """The scores training selects its checkpoint by: misclassified fraction, V_rand and foreground IoU.

    Args:
        probability: (y, x) float32 foreground probability.
        truth: (y, x) true cells, 0 = background.
        threshold: binarisation threshold (a label of ``THRESHOLDS`` or any value).
    """
    foreground = probability.astype(np.float64) > FIJI_VALUE.get(threshold, threshold)
    pixels = pixel_counts(truth, foreground)
    union = pixels["tp"] + pixels["fp"] + pixels["fn"]
    return {
        "misclassified": (pixels["fp"] + pixels["fn"]) / truth.size,
        "v_rand": fscore(**rand_counts(truth, thinned_cells(foreground)))[2],
        "iou": pixels["tp"] / union if union else 1.0,
    }
