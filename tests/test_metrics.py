"""ISBI 2012 metrics on hand-computed cases and against a straightforward reference."""

import math

import numpy as np
import pytest
from skimage.metrics import adapted_rand_error
from unet_pipeline.cells import cells_of
from unet_pipeline.metrics import (
    FIXED_THRESHOLD,
    misclassified_fraction,
    overlap_scores,
    proposal_cells,
    rand_and_info,
    section_scores,
    summarise,
)


def two_cells(gap_open=False):
    """Two 10x10 cells side by side, split by a 2-px membrane (optionally with a 1-px gap)."""
    labels = np.zeros((12, 24), np.uint8)
    labels[1:11, 1:11] = 1
    labels[1:11, 13:23] = 1
    probability = labels.astype(np.float32)
    if gap_open:
        probability[5, 11:13] = 1.0  # a 1-px bridge through the predicted membrane
    return labels, probability


def reference_scores(truth, proposal):
    """Paper formulas on an explicit dense contingency matrix; proposal 0 inside the truth -> singletons."""
    inside = truth > 0
    t = truth[inside]
    p = proposal[inside].astype(np.int64)
    zeros = np.flatnonzero(p == 0)
    p[zeros] = p.max() + 1 + np.arange(len(zeros))  # a fresh segment per border pixel
    _, t = np.unique(t, return_inverse=True)
    _, p = np.unique(p, return_inverse=True)
    matrix = np.zeros((p.max() + 1, t.max() + 1))
    for i, j in zip(p, t):
        matrix[i, j] += 1
    matrix /= matrix.sum()
    s, tt = matrix.sum(axis=1), matrix.sum(axis=0)
    v_rand = 2 * (matrix**2).sum() / ((s**2).sum() + (tt**2).sum())
    h = lambda q: -sum(x * math.log(x) for x in q.ravel() if x > 0)
    mutual = h(s) + h(tt) - h(matrix)
    return v_rand, 2 * mutual / (h(s) + h(tt))


def test_perfect_segmentation_scores_one():
    labels, probability = two_cells()
    row = section_scores(probability, labels, thresholds=[0.5])[0]
    for name in ("v_rand", "v_rand_split", "v_rand_merge", "v_info", "iou", "dice"):
        assert row[name] == pytest.approx(1.0), name
    assert row["misclassified"] == 0.0 and row["rand_fscore_unthinned"] == pytest.approx(1.0)


def test_one_merge():
    labels, _ = two_cells()
    merged = np.ones(labels.shape, np.float32)  # no membrane predicted
    scores = rand_and_info(cells_of(labels), proposal_cells(merged, 0.5))
    # 100 + 100 true pixels in one proposed segment: sum p^2 = 1/2, sum t^2 = 1/2, sum s^2 = 1
    assert scores["v_rand_split"] == pytest.approx(1.0)
    assert scores["v_rand_merge"] == pytest.approx(0.5)
    assert scores["v_rand"] == pytest.approx(2 * 0.5 / 1.5)
    # H(truth) = log 2, H(proposal) = 0, so I = 0: no information is shared
    assert scores["v_info_merge"] == pytest.approx(0.0, abs=1e-12)
    assert scores["v_info_split"] == 1.0
    assert scores["v_info"] == pytest.approx(0.0, abs=1e-12)


def test_one_split_with_border_pixels_as_singletons():
    labels = np.zeros((12, 22), np.uint8)
    labels[1:11, 1:21] = 1  # one cell of 200 pixels
    probability = labels.astype(np.float32)
    probability[:, 10] = 0.0  # a predicted membrane splits it: 10 border pixels, cells of 90 and 100
    scores = rand_and_info(cells_of(labels), proposal_cells(probability, 0.5))
    sum_p2 = (90**2 + 100**2 + 10) / 200**2
    sum_s2 = sum_p2  # each proposal segment lies in the one true cell
    assert scores["v_rand_merge"] == pytest.approx(1.0)
    assert scores["v_rand_split"] == pytest.approx(sum_p2 / 1.0)
    assert scores["v_rand"] == pytest.approx(2 * sum_p2 / (sum_s2 + 1.0))
    assert scores["v_info_merge"] == pytest.approx(1.0)


def test_a_one_pixel_gap_in_the_membrane_merges_two_cells():
    labels, probability = two_cells(gap_open=True)
    closed = section_scores(two_cells()[1], labels, thresholds=[0.5])[0]
    leaky = section_scores(probability, labels, thresholds=[0.5])[0]
    assert closed["v_rand"] == pytest.approx(1.0)
    assert leaky["v_rand_merge"] == pytest.approx(0.5) and leaky["v_rand"] == pytest.approx(2 / 3)
    assert leaky["misclassified"] == pytest.approx(2 / labels.size), "only two pixels are wrong"
    assert leaky["rand_fscore_unthinned"] == pytest.approx(2 / 3)


def test_thick_predicted_borders_are_thinned_to_one_pixel_lines():
    labels, _ = two_cells()
    probability = np.zeros(labels.shape, np.float32)
    probability[3:9, 3:9] = 1.0  # cores of the two cells; everything else predicted membrane
    probability[3:9, 15:21] = 1.0
    probability += 0.01 * np.abs(np.arange(24) - 11.5)[None, :]  # membrane probability highest mid-way
    cells = proposal_cells(probability, 0.5)
    assert set(np.unique(cells)) == {0, 1, 2}
    assert ((cells == 0).sum(axis=1) == 1).all(), "one border pixel per row: a 1-px dividing line"
    horizontal = cells[:, 1:] * cells[:, :-1] == 2  # cell 1 beside cell 2
    vertical = cells[1:, :] * cells[:-1, :] == 2
    assert not horizontal.any() and not vertical.any(), "the two cells never touch 4-connectedly"
    assert rand_and_info(cells_of(labels), cells)["v_rand"] == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_a_straightforward_reference_on_random_labels(seed):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 6, (30, 40))
    proposal = rng.integers(0, 9, (30, 40))
    scores = rand_and_info(truth, proposal)
    v_rand, v_info = reference_scores(truth, proposal)
    assert scores["v_rand"] == pytest.approx(v_rand, rel=1e-10)
    assert scores["v_info"] == pytest.approx(v_info, rel=1e-10)


def test_skimage_differs_by_treating_proposal_zeros_as_one_segment():
    rng = np.random.default_rng(7)
    truth = rng.integers(1, 5, (30, 40))
    proposal = rng.integers(0, 3, (30, 40))
    ours = rand_and_info(truth, proposal)["v_rand"]
    theirs = 1 - adapted_rand_error(truth, proposal)[0]
    assert abs(theirs - ours) > 0.01
    # without border pixels only the pair counting differs (skimage leaves out the n self-pairs): O(1/n)
    no_zeros = proposal + 1
    assert rand_and_info(truth, no_zeros)["v_rand"] == pytest.approx(
        1 - adapted_rand_error(truth, no_zeros)[0], abs=5 / truth.size
    )


def test_misclassified_iou_dice():
    labels = np.array([[1, 1, 0, 0]])
    probability = np.array([[0.9, 0.2, 0.8, 0.1]])
    assert misclassified_fraction(probability, labels) == 0.5
    iou, dice = overlap_scores(probability, labels)
    assert iou == pytest.approx(1 / 3) and dice == pytest.approx(0.5)


def test_unthinned_rand_keeps_proposal_background_as_one_segment():
    labels = np.zeros((12, 22), np.uint8)
    labels[1:11, 1:21] = 1  # one true cell of 200 pixels
    probability = labels.astype(np.float32)
    probability[:, 10] = 0.0  # predicted membrane: 10 pixels inside the cell, cells of 90 and 100 pixels
    row = section_scores(probability, labels, thresholds=[0.5])[0]
    sum_p2 = (90**2 + 100**2 + 10**2) / 200**2  # the 10 membrane pixels form one segment, not singletons
    assert row["rand_fscore_unthinned"] == pytest.approx(2 * sum_p2 / (sum_p2 + 1.0))
    assert row["rand_fscore_unthinned"] > row["v_rand"]


def metric_row(section, threshold, v_rand, v_info, misclassified, dice, unthinned):
    return {
        "section": section,
        "threshold": threshold,
        "v_rand": v_rand,
        "v_info": v_info,
        "misclassified": misclassified,
        "iou": dice - 0.1,
        "dice": dice,
        "rand_fscore_unthinned": unthinned,
    }


SWEEP = [
    metric_row(0, 0.3, 0.8, 0.9, 0.2, 0.6, 0.7),
    metric_row(1, 0.3, 0.9, 0.7, 0.1, 0.6, 0.9),
    metric_row(0, 0.6, 0.95, 0.8, 0.05, 0.8, 0.8),
    metric_row(1, 0.6, 0.85, 0.7, 0.2, 0.9, 0.8),
]


def test_threshold_sweep_picks_the_best_mean_over_sections():
    summary = summarise(SWEEP, SWEEP)  # thresholds chosen on the reported sections themselves
    assert summary["v_rand"] == {
        "value": pytest.approx(0.9),
        "threshold": 0.6,
        "per_threshold": {0.3: pytest.approx(0.85), 0.6: pytest.approx(0.9)},
        "best_over_thresholds": {"value": pytest.approx(0.9), "threshold": 0.6},
    }
    assert summary["v_info"]["threshold"] == 0.3 and summary["misclassified"]["value"] == pytest.approx(0.125)
    assert summary["misclassified"]["threshold"] == 0.6
    assert summary["pixel_error"]["value"] == pytest.approx(1 - 0.85) and summary["pixel_error"]["threshold"] == 0.6
    assert summary["rand_error"]["value"] == pytest.approx(1 - 0.8) and summary["rand_error"]["threshold"] == 0.3


def test_thresholds_chosen_on_validation_give_the_held_out_values():
    validation = [metric_row(5, 0.3, 0.9, 0.6, 0.1, 0.9, 0.9), metric_row(5, 0.6, 0.7, 0.8, 0.3, 0.7, 0.6)]
    summary = summarise(SWEEP, validation)
    assert summary["v_rand"]["threshold"] == 0.3 and summary["v_rand"]["value"] == pytest.approx(0.85)
    assert summary["v_rand"]["best_over_thresholds"] == {"value": pytest.approx(0.9), "threshold": 0.6}
    assert summary["v_info"]["threshold"] == 0.6 and summary["v_info"]["value"] == pytest.approx(0.75)
    assert summary["rand_error"]["value"] == pytest.approx(1 - 0.8) and summary["rand_error"]["threshold"] == 0.3
    assert summary["rand_error"]["best_over_thresholds"] == {"value": pytest.approx(1 - 0.8), "threshold": 0.3}
    assert summary["pixel_error"]["value"] == pytest.approx(1 - 0.6)
    assert summary["pixel_error"]["best_over_thresholds"] == {"value": pytest.approx(1 - 0.85), "threshold": 0.6}
    rows = [dict(row, threshold=FIXED_THRESHOLD if row["threshold"] == 0.6 else 0.3) for row in SWEEP]
    fixed = summarise(rows, None)  # no validation sections: the fixed operating threshold
    assert {metric["threshold"] for metric in fixed.values()} == {FIXED_THRESHOLD}
    assert (
        fixed["v_info"]["value"] == pytest.approx(0.75) and fixed["v_info"]["best_over_thresholds"]["threshold"] == 0.3
    )


def test_touching_instances_stay_separate_cells():
    instances = np.zeros((10, 20), np.uint32)
    instances[1:9, 1:10] = 7
    instances[1:9, 10:19] = 9  # touches cell 7 along a whole column
    assert set(np.unique(cells_of(instances, "instance"))) == {0, 7, 9}
    merged = np.ones(instances.shape, np.float32)  # a proposal that merges them
    as_instances = section_scores(merged, instances, thresholds=[0.5], label_type="instance")[0]
    as_binary = section_scores(merged, (instances > 0).astype(np.uint8), thresholds=[0.5])[0]
    assert as_instances["v_rand_merge"] == pytest.approx(0.5) and as_instances["v_rand"] < 0.7
    assert as_binary["v_rand"] == pytest.approx(1.0), "relabelling the foreground would hide the merge"
