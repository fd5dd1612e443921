"""The standalone scorer, run as users run it: python -m unet_pipeline.metrics PROBABILITIES LABELS."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile
import zarr
from scipy import ndimage
from unet_pipeline.data import volume_store
from unet_pipeline.metrics.__main__ import report, score_stack

SCORES = ("v_rand", "v_info", "rand_error", "pixel_error", "warping_error")


def scorer(*args):
    command = [sys.executable, "-m", "unet_pipeline.metrics", *map(str, args)]
    return subprocess.run(command, check=False, capture_output=True, text=True)


@pytest.fixture(scope="module")
def isbi_crops(isbi_dir, tmp_path_factory):
    """ISBI labels of sections 25-27 (96x96, 0/255) and a blurred, noisy uint8-quantised probability stack."""
    folder = tmp_path_factory.mktemp("scorer")
    labels = tifffile.imread(isbi_dir / "train-labels.tif")[25:28, :96, :96]
    rng = np.random.default_rng(0)
    blurred = ndimage.gaussian_filter((labels == 255).astype(np.float32), (0, 1.5, 1.5))
    stored = np.rint(np.clip(blurred + rng.normal(0, 0.15, labels.shape), 0, 1) * 255).astype(np.uint8)
    probabilities = volume_store.decode_probability(stored)
    tifffile.imwrite(folder / "labels.tif", labels, photometric="minisblack")
    tifffile.imwrite(folder / "probabilities.tif", probabilities, photometric="minisblack")
    root = zarr.open_group(str(folder / "prediction.zarr"), mode="w")
    root.create_array(volume_store.IMAGE_PATH, data=stored, chunks=(1, 96, 96))
    return folder, probabilities, (labels == 255).astype(np.uint8)


def test_scores_a_tiff_stack_and_writes_json(isbi_crops):
    folder, probabilities, labels = isbi_crops
    result = scorer(folder / "probabilities.tif", folder / "labels.tif", "--json", folder / "out.json", "--workers", 2)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert json.loads((folder / "out.json").read_text()) == printed
    expected = report(score_stack(probabilities, labels))
    for name in SCORES:
        assert set(printed[name]) == {"value", "threshold"}
        assert printed[name]["value"] == pytest.approx(expected[name]["value"], abs=1e-12), name
        assert printed[name]["threshold"] == expected[name]["threshold"]
    assert [row["threshold"] for row in printed["per_threshold"]] == [round(0.1 * i, 1) for i in range(11)]
    best = min(printed["per_threshold"], key=lambda row: row["warping_error"])
    assert printed["warping_error"] == {"value": best["warping_error"], "threshold": best["threshold"]}
    assert 0.5 < printed["v_rand"]["value"] < 1 and printed["sections"] == 3


def test_a_prediction_store_scores_like_its_submission_tiff(isbi_crops):
    folder, _, _ = isbi_crops
    from_store = scorer(folder / "prediction.zarr", folder / "labels.tif")
    from_tiff = scorer(folder / "probabilities.tif", folder / "labels.tif")
    assert from_store.returncode == 0, from_store.stderr
    store, tiff = json.loads(from_store.stdout), json.loads(from_tiff.stdout)
    assert {name: store[name] for name in SCORES} == {name: tiff[name] for name in SCORES}


def test_labels_with_other_values_are_refused(isbi_crops, tmp_path):
    folder, _, labels = isbi_crops
    tifffile.imwrite(tmp_path / "ones.tif", labels, photometric="minisblack")  # 0/1 labels, not 0/255
    result = scorer(folder / "probabilities.tif", tmp_path / "ones.tif", "--json", tmp_path / "out.json")
    assert result.returncode == 2 and "ones.tif" in result.stderr and "--labels-foreground" in result.stderr
    assert not (tmp_path / "out.json").exists()
    assert scorer(folder / "probabilities.tif", tmp_path / "ones.tif", "--labels-foreground", 1).returncode == 0


@pytest.mark.parametrize(
    "probabilities, message",
    [
        (None, "no such file"),
        (np.full((3, 96, 96), 1.5, np.float32), "within [0, 1]"),
        (np.zeros((3, 96, 96), np.uint8), "expected float probabilities"),
        (np.zeros((2, 96, 96), np.float32), "differs from"),
    ],
    ids=["missing", "out-of-range", "uint8", "shape"],
)
def test_bad_probabilities_name_the_file_and_the_problem(isbi_crops, tmp_path, probabilities, message):
    folder, _, _ = isbi_crops
    path = tmp_path / "p.tif"
    if probabilities is not None:
        tifffile.imwrite(path, probabilities, photometric="minisblack")
    result = scorer(path, folder / "labels.tif")
    assert result.returncode == 2 and str(path) in result.stderr and message in result.stderr, result.stderr
