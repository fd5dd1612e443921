"""ISBI 2012 metrics as Fiji computes them: hand-checked cases for each convention, and a brute-force reference."""

import math

import numpy as np
import pytest
from unet_pipeline.metrics import FIJI_THRESHOLDS, FIXED_THRESHOLD, THRESHOLDS, section_scores, summarise
from unet_pipeline.metrics.scores import information_scores, rand_counts, validation_scores
from unet_pipeline.metrics.summary import per_threshold, smoothed
from unet_pipeline.metrics.thinning import thinned_cells, unthinned_cells, watershed_fiji
from unet_pipeline.metrics.warping import simple_point_table, warping_mismatches
from unet_pipeline.transforms.cells import cells_of


def score(probability, labels, threshold=0.5):
    return section_scores(np.asarray(probability, np.float32), cells_of(np.asarray(labels, np.uint8)), [threshold])[0]


def stack(probabilities, labels, threshold=0.5):
    rows = [row for p, t in zip(probabilities, labels) for row in [score(p, t, threshold)]]
    return per_threshold(rows)[threshold]


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


def test_thresholds_are_fijis_doubles():
    assert len(FIJI_THRESHOLDS) == 11 and THRESHOLDS == tuple(round(0.1 * i, 1) for i in range(11))
    assert FIJI_THRESHOLDS[3] == 0.30000000000000004 and FIJI_THRESHOLDS[-1] == 0.9999999999999999


def test_perfect_segmentation_scores_one_and_no_error():
    labels, probability = two_cells()
    row = score(probability, labels)
    for name in ("v_rand", "v_rand_split", "v_rand_merge", "v_info", "rand_fscore"):
        assert row[name] == pytest.approx(1.0), name
    assert row["warping_error"] == 0 and row["pixel_fp"] == row["pixel_fn"] == 0


def test_table1_rand_error_takes_proposal_background_as_singletons():
    labels = np.zeros((3, 6), np.uint8)
    labels[1, 1:5] = 1  # one true cell of 4 pixels
    probability = labels.astype(np.float32)
    probability[1, 3:5] = 0.0  # its right half predicted membrane
    # pair counts with self-pairs: tp = 2^2 + 1 + 1 (two singletons), proposal sum 6, truth sum 16
    assert rand_counts(cells_of(labels), unthinned_cells(probability > 0.5)) == {"tp": 6.0, "fp": 0.0, "fn": 10.0}
    assert stack([probability], [labels])["rand_error"] == pytest.approx(1 - 6 / 11)  # one segment would give 1/3


def test_table1_rand_error_pools_pair_counts_over_sections():
    labels = np.zeros((3, 6), np.uint8)
    labels[1, 1:5] = 1
    broken = labels.astype(np.float32)
    broken[1, 3:5] = 0.0
    # section 1: tp 16, fp 0, fn 0; section 2: tp 6, fp 0, fn 10 -> recall 22/32, F = 22/27
    pooled = stack([labels, broken], [labels, labels])
    assert pooled["rand_error"] == pytest.approx(1 - 22 / 27)
    assert abs(pooled["rand_error"] - (1 - (1 + 6 / 11) / 2)) > 0.03, "not the mean of per-section F-scores"


def test_pixel_error_pools_counts_and_v_rand_averages_sections():
    labels, perfect = two_cells()
    merged = np.ones(labels.shape, np.float32)
    both = stack([perfect, merged], [labels, labels])
    tp, fp = 2 * 200, 12 * 24 - 200  # the merged map calls every membrane pixel cell interior
    assert both["pixel_error"] == pytest.approx(1 - 2 * tp / (2 * tp + fp))
    merged_v_rand = score(merged, labels)["v_rand"]
    assert both["v_rand"] == pytest.approx((1 + merged_v_rand) / 2)


def test_one_merge_and_its_parts():
    labels, _ = two_cells()
    row = score(np.ones(labels.shape, np.float32), labels)  # no membrane predicted
    # 100 + 100 true pixels in one proposed segment: sum p^2 = 1/2, sum t^2 = 1/2, sum s^2 = 1
    assert row["v_rand_split"] == pytest.approx(1.0) and row["v_rand_merge"] == pytest.approx(0.5)
    assert row["v_rand"] == pytest.approx(2 / 3)
    assert row["v_info"] == 0.0, "one proposed segment: H(proposal) = 0, Fiji scores 0"


def test_one_true_cell_scores_zero_v_info_as_in_fiji():
    labels = np.zeros((5, 5), np.uint8)
    labels[1:4, 1:4] = 1
    row = score(labels.astype(np.float32), labels)
    assert row["v_rand"] == pytest.approx(1.0) and row["v_info"] == 0.0  # both entropies are 0


def test_split_border_pixels_are_singletons():
    labels = np.zeros((12, 22), np.uint8)
    labels[1:11, 1:21] = 1  # one cell of 200 pixels
    probability = labels.astype(np.float32)
    probability[:, 10] = 0.0  # a 1-px predicted membrane: 10 border pixels, cells of 90 and 100
    row = score(probability, labels)
    sum_p2 = (90**2 + 100**2 + 10) / 200**2
    assert row["v_rand_merge"] == pytest.approx(1.0) and row["v_rand_split"] == pytest.approx(sum_p2)
    assert row["v_rand"] == pytest.approx(2 * sum_p2 / (sum_p2 + 1.0))


def test_watershed_line_on_a_two_pixel_border_goes_right_and_down():
    # Fiji floods column by column with neighbours left, up, right, down: on a 2-px border the
    # left (upper) border pixel joins the left (upper) cell and the other becomes the line.
    row = np.array([[0, 0, 0, 255, 255, 0, 0, 0]])
    assert watershed_fiji(row).tolist() == [[1, 1, 1, 1, 0, 2, 2, 2]]
    column = np.zeros((8, 3), int)
    column[3:5] = 255
    expected = np.array([1, 1, 1, 1, 0, 2, 2, 2])[:, None].repeat(3, axis=1)
    assert (watershed_fiji(column) == expected).all()
    three = np.array([[0, 0, 255, 255, 255, 0, 0]])
    assert watershed_fiji(three).tolist() == [[1, 1, 1, 0, 2, 2, 2]]


def test_thick_borders_are_thinned_to_one_pixel_lines():
    labels, _ = two_cells()
    probability = np.zeros(labels.shape, np.float32)
    probability[3:9, 3:9] = 1.0  # cores of the two cells; everything else predicted membrane
    probability[3:9, 15:21] = 1.0
    cells = thinned_cells(probability > 0.5)
    assert set(np.unique(cells)) == {0, 1, 2}
    assert ((cells == 0).sum(axis=1) == 1).all(), "one border pixel per row: a 1-px dividing line"
    assert score(probability, labels)["v_rand"] == pytest.approx(1.0)


def test_no_cell_predicted_is_one_segment_when_thinned():
    assert (thinned_cells(np.zeros((4, 5), bool)) == 1).all()
    assert (unthinned_cells(np.zeros((4, 5), bool)) == 0).all()


def test_uint8_levels_are_compared_in_double_like_fiji():
    labels = np.zeros((3, 4), np.uint8)
    labels[1, 1:3] = 1
    for level, threshold in ((51, 0.2), (102, 0.4), (153, 0.6)):
        probability = np.zeros(labels.shape, np.float32)
        probability[labels == 1] = np.float32(level / 255)  # 0.2000000029... in float32
        assert np.float32(level / 255) == np.float32(threshold), "in float32 the level equals the threshold"
        assert score(probability, labels, threshold)["pixel_tp"] == 2, "in double it lies above it"


def test_the_last_threshold_keeps_certain_pixels():
    labels, probability = two_cells()
    row = score(probability, labels, 1.0)
    assert FIJI_THRESHOLDS[-1] < 1.0 and row["pixel_tp"] == 200 and row["v_rand"] == pytest.approx(1.0)


def test_empty_truth_has_no_rand_scores_but_counts_in_pixel_and_warping_error():
    empty = np.zeros((6, 6), np.uint8)
    blob = np.zeros((6, 6), np.float32)
    blob[2, 2] = 1.0  # one predicted pixel where nothing is
    row = score(blob, empty)
    assert math.isnan(row["v_rand"]) and math.isnan(row["v_info"]) and math.isnan(row["rand_fscore"])
    labels, perfect = two_cells()
    both = stack([perfect[:6, :6], blob], [labels[:6, :6], empty])
    assert both["v_rand"] == pytest.approx(1.0), "over the section with cells"
    assert both["pixel_error"] > 0 and both["warping_error"] == pytest.approx(0.5 / 36), "an added object"


@pytest.mark.parametrize("seed", range(5))
def test_rand_and_info_agree_with_a_dense_reference_on_random_labels(seed):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 6, (30, 40))
    proposal = rng.integers(0, 9, (30, 40))
    counts = rand_counts(truth, proposal)
    v_rand, v_info = reference_scores(truth, proposal)
    assert 2 * counts["tp"] / (2 * counts["tp"] + counts["fp"] + counts["fn"]) == pytest.approx(v_rand, rel=1e-10)
    assert information_scores(truth, proposal)["v_info"] == pytest.approx(v_info, rel=1e-10)


def test_touching_instances_stay_separate_cells():
    instances = np.zeros((10, 20), np.uint32)
    instances[1:9, 1:10] = 7
    instances[1:9, 10:19] = 9  # touches cell 7 along a whole column
    merged = np.ones(instances.shape, np.float32)
    as_instances = section_scores(merged, cells_of(instances, "instance"), [0.5])[0]
    assert as_instances["v_rand_merge"] == pytest.approx(0.5) and as_instances["v_rand"] < 0.7


# Warping error: cases with a known number of topological errors.


def cell(height=12, width=14):
    labels = np.zeros((height, width), np.uint8)
    labels[2:-2, 2:-2] = 1
    return labels


def test_simple_points_follow_the_plane_embedding_of_bertrands_test():
    table = simple_point_table()
    code = lambda patch: int(sum(int(v) << k for k, v in enumerate(np.asarray(patch).ravel())))
    assert table[code([[0, 0, 0], [1, 1, 1], [1, 1, 1]])], "a border pixel of a cell"
    assert not table[code([[1, 1, 1], [1, 0, 1], [1, 1, 1]])], "flipping would make a hole"
    assert not table[code([[0, 1, 0], [0, 0, 0], [0, 1, 0]])], "flipping would join two parts"
    assert not table[code(np.zeros((3, 3)))], "an isolated pixel cannot appear or vanish"
    assert table.sum() == 232


def test_warping_forgives_boundary_shifts():
    labels = cell()
    grown = np.zeros(labels.shape, np.float32)
    grown[1:-1, 1:-1] = 1.0
    shrunk = np.zeros(labels.shape, np.float32)
    shrunk[4:-4, 4:-4] = 1.0
    assert warping_mismatches(labels, labels.astype(np.float32), 0.5) == 0
    assert warping_mismatches(labels, grown, 0.5) == 0 and warping_mismatches(labels, shrunk, 0.5) == 0


def test_warping_counts_a_split_as_one_pixel():
    labels = cell()
    split = labels.astype(np.float32)
    split[:, 7] = 0.0  # a 1-px predicted membrane across the cell
    assert warping_mismatches(labels, split, 0.5) == 1


def test_warping_counts_every_pixel_of_a_merging_gap():
    labels = cell()
    labels[:, 7] = 0  # two true cells, 8-px line between them
    merged = cell().astype(np.float32)
    assert warping_mismatches(labels, merged, 0.5) == 8


def test_warping_counts_a_hole():
    labels = cell()
    hole = labels.astype(np.float32)
    hole[6, 6] = 0.0
    assert warping_mismatches(labels, hole, 0.5) == 1
    assert score(hole, labels)["warping_error"] == pytest.approx(1 / labels.size)


def test_summary_chooses_thresholds_on_validation_and_reports_the_best_beside():
    labels, perfect = two_cells()
    faint = labels * np.float32(0.7)  # float32 0.7 lies below Fiji's double 0.7
    rows = [dict(row, section=0) for row in section_scores(faint, cells_of(labels), THRESHOLDS)]
    validation = [dict(row, section=1) for row in section_scores(perfect, cells_of(labels), THRESHOLDS)]
    summary = summarise(rows, validation)
    assert summary["v_rand"]["threshold"] == 0.0, "the first threshold that reaches the best validation score"
    assert summary["v_rand"]["per_threshold"][0.6] == pytest.approx(1.0)
    assert summary["v_rand"]["per_threshold"][0.7] == pytest.approx(2 / 3), "no cell left: one segment"
    assert summary["v_rand_merge"]["threshold"] == summary["v_rand"]["threshold"]
    assert summary["warping_error"]["best_over_thresholds"]["value"] == min(
        summary["warping_error"]["per_threshold"].values()
    )
    fixed = summarise(rows, None)
    assert {fixed[name]["threshold"] for name in fixed} == {FIXED_THRESHOLD}


def scored(section: int, threshold: float, value: float) -> dict:
    """A section's row at a threshold whose every score is ``value`` (counts: one true pair)."""
    counts = {f"{kind}_{key}": int(key == "tp") for kind in ("vrand", "rand", "pixel") for key in ("tp", "fp", "fn")}
    means = {name: value for name in ("v_rand", "v_info", "v_info_split", "v_info_merge")}
    return {"section": section, "threshold": threshold, **counts, **means, "pixel_tn": 0, "warping_error": 1 - value}


def test_a_window_chooses_a_plateau_over_a_spike_between_two_dips():
    curve = {0.2: 0.85, 0.3: 0.99, 0.4: 0.80, 0.5: 0.95, 0.6: 0.97, 0.7: 0.92}
    validation = [scored(1, t, v) for t, v in curve.items()]
    reported = [scored(0, t, 0.5 + t) for t in curve]
    assert summarise(reported, validation)["v_rand"]["threshold"] == 0.3, "no window: the best single setting"
    summary = summarise(reported, validation, window=0.1)
    assert summary["v_rand"]["threshold"] == 0.6, "(0.95 + 0.97 + 0.92) / 3 beats (0.85 + 0.99 + 0.80) / 3"
    assert summary["v_rand"]["value"] == pytest.approx(1.1), "the reported value is the unsmoothed one"
    assert summary["warping_error"]["threshold"] == 0.6, "lower is better: the same window"
    assert summary["v_rand_split"]["threshold"] == 0.6
    assert {entry["threshold"] for entry in summarise(reported, None, 0.1).values()} == {FIXED_THRESHOLD}
    assert smoothed(curve, 0.1)[0.2] == pytest.approx((0.85 + 0.99) / 2), "an end averages the settings it has"
    assert smoothed({0.3: math.nan, 0.4: 0.9}, 0.1) == {0.3: 0.9, 0.4: 0.9}, "NaN is skipped"
    assert smoothed(curve, 0) == curve


def test_validation_scores_match_the_evaluation_at_the_fixed_threshold():
    labels, probability = two_cells(gap_open=True)
    quick = validation_scores(probability, cells_of(labels))
    full = score(probability, labels, FIXED_THRESHOLD)
    assert quick["v_rand"] == full["v_rand"] and quick["misclassified"] == pytest.approx(2 / labels.size)
