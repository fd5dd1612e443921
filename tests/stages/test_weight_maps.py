"""The U-Net weight map against a brute-force reference and analytic cases."""

import math

import numpy as np
import pytest
import tifffile
from scipy import ndimage
from unet_pipeline.core.errors import InputDataError
from unet_pipeline.data import volume_store
from unet_pipeline.stages.ingest import ingest
from unet_pipeline.stages.weight_maps import cells_of, write_weight_maps
from unet_pipeline.transforms.loss_weights import border_weight, brute_force_border_weight, class_weights, weight_map

W0, SIGMA = 10.0, 5.0


def random_instances(rng, shape=(96, 80), n_seeds=25, drop=0.2):
    """Voronoi cells separated by 1-px borders, some removed to leave wide background areas."""
    seeds = rng.integers(0, shape, size=(n_seeds, 2))
    grid = np.stack(np.indices(shape), axis=-1)
    nearest = np.argmin(((grid[..., None, :] - seeds) ** 2).sum(-1), axis=-1) + 1
    border = np.zeros(shape, bool)
    border[:-1] |= nearest[:-1] != nearest[1:]
    border[:, :-1] |= nearest[:, :-1] != nearest[:, 1:]
    cells = np.where(border, 0, nearest)
    cells[np.isin(cells, rng.choice(n_seeds, int(drop * n_seeds), replace=False) + 1)] = 0
    return cells.astype(np.int32)


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force_on_random_instance_maps(seed):
    cells = random_instances(np.random.default_rng(seed))
    fast = border_weight(cells, W0, SIGMA)
    slow = brute_force_border_weight(cells, W0, SIGMA)
    np.testing.assert_allclose(fast, slow, atol=1e-7, rtol=0)
    assert fast.max() > 1.0, "the random maps must exercise the border term"


@pytest.mark.parametrize("sigma, w0", [(2.0, 10.0), (8.0, 3.0)])
def test_matches_brute_force_on_random_binary_masks(sigma, w0):
    rng = np.random.default_rng(42)
    mask = ndimage.binary_opening(rng.random((70, 90)) < 0.6).astype(np.uint8)
    cells = cells_of(mask)
    assert cells.max() >= 3
    np.testing.assert_allclose(
        border_weight(cells, w0, sigma), brute_force_border_weight(cells, w0, sigma), atol=1e-7, rtol=0
    )


@pytest.mark.parametrize("gap", [3, 7, 12, 20])
def test_two_discs_midpoint_is_analytic(gap):
    radius, cy, cx1 = 9, 40, 25
    cx2 = cx1 + 2 * radius + gap
    yy, xx = np.indices((80, cx2 + radius + 15))
    labels = ((yy - cy) ** 2 + (xx - cx1) ** 2 <= radius**2) | ((yy - cy) ** 2 + (xx - cx2) ** 2 <= radius**2)
    weights = weight_map(labels.astype(np.uint8), (0.7, 0.3), W0, SIGMA)
    # the gap is the distance between the facing edge pixels; for an odd gap the midpoint lies
    # between two pixels, and for both d1 + d2 still equals the gap
    expected = 0.7 + W0 * math.exp(-(gap**2) / (2 * SIGMA**2))
    for x in {(cx1 + cx2) // 2, (cx1 + cx2 + 1) // 2}:
        assert weights[cy, x] == pytest.approx(expected, abs=1e-5)
    assert weights[labels].max() == pytest.approx(0.3), "cells keep their class weight alone"


def test_no_cell_and_one_cell_have_no_border_term():
    assert not border_weight(np.zeros((30, 30), np.int32)).any()
    one = np.zeros((30, 30), np.int32)
    one[5:15, 5:15] = 1
    assert not border_weight(one).any()
    weights = weight_map((one > 0).astype(np.uint8), (1.0, 0.25))
    assert set(np.unique(weights)) == {0.25, 1.0}


def test_cells_touching_the_image_border():
    cells = np.zeros((40, 40), np.int32)
    cells[:, :10] = 1  # touches three image borders
    cells[:15, 14:] = 2
    cells[20:, 14:] = 3
    fast = border_weight(cells, W0, SIGMA)
    np.testing.assert_allclose(fast, brute_force_border_weight(cells, W0, SIGMA), atol=1e-7, rtol=0)
    # between columns 9 (cell 1) and 14 (cell 2): d1 + d2 = 5 for every gap pixel on row 0
    assert fast[0, 12] == pytest.approx(W0 * math.exp(-(5**2) / (2 * SIGMA**2)), abs=1e-5)


def test_non_binary_labels_need_the_instance_flag():
    labels = np.array([[0, 1], [2, 3]], np.uint8)
    with pytest.raises(InputDataError, match=r"values \[0, 1, 2, 3\], not 0/1; declare `type: instance`"):
        weight_map(labels, (1.0, 1.0))
    assert weight_map(labels, (1.0, 0.5), label_type="instance").shape == (2, 2)


@pytest.mark.parametrize("seed", range(3))
def test_always_finite_and_positive(seed):
    rng = np.random.default_rng(seed)
    for labels in (
        np.zeros((20, 20), np.uint8),
        np.ones((20, 20), np.uint8),
        (rng.random((64, 64)) < 0.5).astype(np.uint8),
    ):
        weights = weight_map(labels, class_weights(labels.mean()))
        assert np.isfinite(weights).all() and (weights > 0).all() and weights.dtype == np.float32


def test_class_weights_balance_frequencies():
    background, foreground = class_weights(0.8)
    assert (background, foreground) == (1.0, pytest.approx(0.25))
    assert class_weights(0.2) == (pytest.approx(0.25), 1.0)
    assert class_weights(0.0) == (1.0, 1.0)


@pytest.fixture(scope="module")
def tiny_store(tiny_isbi, tmp_path_factory):
    out = tmp_path_factory.mktemp("store") / "volume.zarr"
    config = {
        "image": {"source": str(tiny_isbi / "train-volume.tif")},
        "labels": {"source": str(tiny_isbi / "train-labels.tif"), "foreground": 255, "background": 0},
        "sections": {"train": "0-1", "validation": "2"},
    }
    ingest("tiny", config, tiny_isbi / "train-volume.tif", tiny_isbi / "train-labels.tif", out)
    return out


def test_write_weight_maps_over_a_volume(tiny_store, tiny_isbi, tmp_path):
    serial = write_weight_maps(tiny_store, tmp_path / "w1.zarr", workers=1)
    write_weight_maps(tiny_store, tmp_path / "w2.zarr", workers=2)
    labels = tifffile.imread(tiny_isbi / "train-labels.tif") == 255
    fraction = labels[:2].mean()  # the training sections only
    assert serial["foreground_fraction"] == pytest.approx(fraction)
    expected_cw = class_weights(fraction)
    assert serial["class_weights"] == {"background": expected_cw[0], "foreground": expected_cw[1]}
    one = volume_store.open_store(tmp_path / "w1.zarr")[volume_store.IMAGE_PATH][:]
    two = volume_store.open_store(tmp_path / "w2.zarr")[volume_store.IMAGE_PATH][:]
    np.testing.assert_array_equal(one, two)
    for z in range(3):
        np.testing.assert_array_equal(one[z], weight_map(labels[z].astype(np.uint8), expected_cw))


def test_dataset_without_labels_has_no_weight_maps(tiny_isbi, tmp_path):
    store = tmp_path / "volume.zarr"
    ingest("nolabels", {"image": {"source": "x"}}, tiny_isbi / "test-volume.tif", None, store)
    with pytest.raises(InputDataError, match="'nolabels' has no labels"):
        write_weight_maps(store, tmp_path / "weights.zarr")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["volume.zarr"]
