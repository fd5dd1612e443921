"""Segmentation scores as the ISBI 2012 organisers computed them, plus pixel error, IoU and Dice.

For one section, a foreground probability map and binary ground truth
(1 = cell interior):

1. The probability map is binarised at a threshold; its 4-connected foreground
   components are the proposed cells. A watershed with 4-connectivity, seeded by
   those cells and flooding the membrane probability, thins the borders between
   them to 1-px watershed lines (Fiji's evaluation does the same with
   MorphoLibJ).
2. The ground-truth cells are the 4-connected components of the labels.
3. Only pixels inside ground-truth cells count ("foreground-restricted"). On
   them the contingency table p_ij (fraction of pixels in true cell i and
   proposed cell j) is built, and a proposal border pixel (watershed line)
   inside a true cell is its own singleton segment.
4. With p_ij the fraction of those pixels in proposed segment i and true cell j,
   s_i = sum_j p_ij (proposal) and t_j = sum_i p_ij (truth), as in
   Arganda-Carreras et al. (2015):
   V_rand split = sum p_ij^2 / sum t_j^2, merge = sum p_ij^2 / sum s_i^2 and
   V_rand = 2 sum p_ij^2 / (sum s_i^2 + sum t_j^2);
   V_info split = I / H(proposal), merge = I / H(truth) and
   V_info = 2 I / (H(proposal) + H(truth)), I the mutual information.
   A merge lowers the merge scores, a split the split scores.
5. Per threshold the scores are averaged over sections. The challenge reports
   the maximum over thresholds 0.0, 0.1, ..., 1.0 (``best_over_thresholds``),
   which is optimistic: it selects on the scored sections. ``summarise``
   reports the scored sections at the threshold that is best on other
   (validation) sections as the main value, and the maximum beside it.

The U-Net paper's Table 1 used the challenge's earlier metrics, which the
organisers define as
- Rand error: 1 - the maximal F-score of the foreground-restricted Rand index,
  on the 4-connected proposal cells without border thinning; proposal
  background is one ordinary segment, only true background is excluded;
- pixel error: 1 - the maximal F-score of pixel similarity, i.e. of the
  foreground (cell) pixel classification, which is the Dice score.
Both are reported as such (``rand_error``, ``pixel_error``). The plain fraction of
misclassified pixels is reported too (``misclassified``, minimum over
thresholds), as are the foreground IoU and Dice.

Differences from ``skimage.metrics.adapted_rand_error``: scikit-image also ignores
pixels where the truth is 0, but it takes label 0 of the proposal as one
ordinary segment instead of singletons and does not thin borders, so every
proposal membrane pixel inside a true cell joins one giant segment; it counts
pairs of distinct pixels (leaving out the n self-pairs that the probabilities
p_ij include, an O(1/n) difference); and its precision and recall are the split
and merge scores in the other order. Its F-score is therefore lower wherever
predicted membranes are thick. The warping error is not computed: a faithful implementation needs
the topology-preserving warping with simple points of Jain et al. (2010), and an
approximation would not be comparable to published values.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .cells import FOUR_CONNECTED, cells_of

THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(11))
# The operating threshold when no validation sections exist to choose one (training selects its checkpoint at 0.5).
FIXED_THRESHOLD = 0.5


def misclassified_fraction(probability: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> float:
    """Fraction of pixels whose thresholded class differs from the labels."""
    return float(np.mean((probability > threshold) != (labels > 0)))


def overlap_scores(probability: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> tuple[float, float]:
    """IoU and Dice of the foreground (1.0 each when both are empty)."""
    predicted, truth = probability > threshold, labels > 0
    intersection = np.count_nonzero(predicted & truth)
    union = np.count_nonzero(predicted | truth)
    total = np.count_nonzero(predicted) + np.count_nonzero(truth)
    return (intersection / union if union else 1.0), (2 * intersection / total if total else 1.0)


def proposal_cells(probability: np.ndarray, threshold: float) -> np.ndarray:
    """Proposed cells with borders thinned to 1-px watershed lines (label 0)."""
    from skimage.segmentation import watershed

    markers, count = ndimage.label(probability > threshold, structure=FOUR_CONNECTED)
    if count == 0:
        return markers
    # Flooding only ever starts from cell pixels next to the background, so the watershed
    # runs on the background and that rim alone: same result, a third of the work.
    band = ndimage.binary_dilation(markers == 0, structure=FOUR_CONNECTED)
    flooded = watershed(1.0 - probability, markers, connectivity=1, watershed_line=True, mask=band)
    return np.where(band, flooded, markers)


def contingency(truth: np.ndarray, proposal: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Joint and marginal counts on truth foreground; proposal label 0 counts as singletons.

    Returns (joint counts of (i, j) pairs with j > 0, counts per true cell,
    counts per proposed cell j > 0, number of singleton pixels).
    """
    inside = truth > 0
    t, p = truth[inside].astype(np.int64), proposal[inside].astype(np.int64)
    singletons = int(np.count_nonzero(p == 0))
    t_all = np.bincount(t)
    t_pair, p_pair = t[p > 0], p[p > 0]
    keys = t_pair * (int(p.max()) + 1) + p_pair
    _, joint = np.unique(keys, return_counts=True)
    proposed = np.bincount(p_pair)
    return joint, t_all[t_all > 0], proposed[proposed > 0], singletons


def rand_and_info(truth: np.ndarray, proposal: np.ndarray) -> dict:
    """Foreground-restricted V_rand and V_info with their split and merge parts."""
    joint, true_sizes, proposed_sizes, singletons = contingency(truth, proposal)
    n = float(true_sizes.sum())
    if n == 0:
        return {
            name: 1.0 for name in ("v_rand", "v_rand_split", "v_rand_merge", "v_info", "v_info_split", "v_info_merge")
        }
    p_ij = np.concatenate([joint, np.ones(singletons)]) / n
    s_i = np.concatenate([proposed_sizes, np.ones(singletons)]) / n
    t_j = true_sizes / n
    sum_p2, sum_s2, sum_t2 = (p_ij**2).sum(), (s_i**2).sum(), (t_j**2).sum()
    scores = {
        "v_rand_split": sum_p2 / sum_t2,
        "v_rand_merge": sum_p2 / sum_s2,
        "v_rand": 2 * sum_p2 / (sum_s2 + sum_t2),
    }
    entropy_proposal = -(s_i * np.log(s_i)).sum()
    entropy_truth = -(t_j * np.log(t_j)).sum()
    mutual = entropy_truth + entropy_proposal + (p_ij * np.log(p_ij)).sum()
    scores["v_info_split"] = mutual / entropy_proposal if entropy_proposal > 0 else 1.0
    scores["v_info_merge"] = mutual / entropy_truth if entropy_truth > 0 else 1.0
    total = entropy_truth + entropy_proposal
    scores["v_info"] = 2 * mutual / total if total > 0 else 1.0
    return {key: float(value) for key, value in scores.items()}


def unthinned_rand_fscore(truth: np.ndarray, probability: np.ndarray, threshold: float) -> float:
    """Foreground-restricted Rand F-score of the paper's Table 1: no thinning, proposal background one segment."""
    proposal, count = ndimage.label(probability > threshold, structure=FOUR_CONNECTED)
    proposal[proposal == 0] = count + 1
    return rand_and_info(truth, proposal)["v_rand"]


def section_scores(
    probability: np.ndarray, labels: np.ndarray, thresholds=THRESHOLDS, label_type: str = "binary"
) -> list[dict]:
    """Every score of one section at every threshold (``label_type``: binary, or instance ids per cell)."""
    truth = cells_of(labels, label_type)
    rows = []
    for threshold in thresholds:
        iou, dice = overlap_scores(probability, labels, threshold)
        rows.append(
            {
                "threshold": threshold,
                **rand_and_info(truth, proposal_cells(probability, threshold)),
                "rand_fscore_unthinned": unthinned_rand_fscore(truth, probability, threshold),
                "misclassified": misclassified_fraction(probability, labels, threshold),
                "iou": iou,
                "dice": dice,
            }
        )
    return rows


HIGHER_IS_BETTER = {
    "v_rand": True,
    "v_info": True,
    "rand_fscore_unthinned": True,
    "dice": True,
    "iou": True,
    "misclassified": False,
}


def _means(rows: list[dict], metric: str) -> dict:
    """The mean over sections of ``metric`` at each threshold."""
    thresholds = sorted({row["threshold"] for row in rows})
    return {t: float(np.mean([row[metric] for row in rows if row["threshold"] == t])) for t in thresholds}


def _best(means: dict, higher: bool) -> float:
    return (max if higher else min)(means, key=lambda t: means[t])


def summarise(rows: list[dict], selection_rows: list[dict] | None = None) -> dict:
    """Per metric: the value at an operating threshold chosen on other sections, and the best over thresholds.

    Args:
        rows: per-section, per-threshold scores of the reported sections (``section_scores``).
        selection_rows: the same for the sections that choose each metric's operating threshold (the
            validation sections; the reported ones themselves when there are no others). None: the
            operating threshold is ``FIXED_THRESHOLD``.

    Returns:
        metric -> {value (reported sections at the operating threshold), threshold, per_threshold (their
        means), best_over_thresholds: {value, threshold}, the challenge's way, optimistic when no other
        sections chose the threshold}; plus the paper's Table 1 errors rand_error = 1 - unthinned Rand
        F-score and pixel_error = 1 - pixel F-score (the foreground Dice), in the same form.
    """
    summary = {}
    for metric, higher in HIGHER_IS_BETTER.items():
        means = _means(rows, metric)
        operating = _best(_means(selection_rows, metric), higher) if selection_rows else FIXED_THRESHOLD
        best = _best(means, higher)
        summary[metric] = {
            "value": means[operating],
            "threshold": operating,
            "per_threshold": means,
            "best_over_thresholds": {"value": means[best], "threshold": best},
        }
    for error, score in (("rand_error", "rand_fscore_unthinned"), ("pixel_error", "dice")):
        of = summary[score]
        summary[error] = {
            "value": 1.0 - of["value"],
            "threshold": of["threshold"],
            "best_over_thresholds": {
                "value": 1.0 - of["best_over_thresholds"]["value"],
                "threshold": of["best_over_thresholds"]["threshold"],
            },
        }
    return summary
