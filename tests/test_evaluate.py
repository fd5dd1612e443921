"""The evaluation stage: which sections, the table and summary, refusals."""

import json

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr

from unet_pipeline import volume_store
from unet_pipeline.errors import InputDataError
from unet_pipeline.evaluate import evaluate, evaluation_sections, plot_overlays, plot_predictions, plot_threshold_curves
from unet_pipeline.ingest import ingest


@pytest.fixture
def store_and_prediction(tmp_path):
    labels = np.zeros((3, 40, 40), np.uint8)
    labels[:, 2:18, 2:38] = 255
    labels[:, 22:38, 2:38] = 255
    tifffile.imwrite(tmp_path / "img.tif", (labels // 2).astype(np.uint8), photometric="minisblack")
    tifffile.imwrite(tmp_path / "lab.tif", labels, photometric="minisblack")
    config = {"image": {"source": "i"}, "labels": {"source": "l"}, "sections": {"train": "0", "validation": "1-2"}}
    ingest("d", config, tmp_path / "img.tif", tmp_path / "lab.tif", tmp_path / "volume.zarr")
    probability = (labels > 0).astype(np.float32) * 0.8 + 0.1
    probability[2, 18:22, 10] = 0.9  # a 1-px bridge across the membrane of section 2 merges its cells at 0.5
    root = zarr.open_group(str(tmp_path / "prediction.zarr"), mode="w")
    root.create_array("0", data=np.rint(probability * 255).astype(np.uint8))
    root.attrs[volume_store.PROVENANCE_KEY] = {"model": "m.pt", "model_metadata": {}, "tta": False}
    return tmp_path


def test_evaluate_writes_table_and_summary(store_and_prediction):
    folder = store_and_prediction
    summary = evaluate(folder / "prediction.zarr", folder / "volume.zarr", folder / "s.csv", folder / "s.json", workers=2)
    table = pd.read_csv(folder / "s.csv")
    assert sorted(table["section"].unique()) == [1, 2] and len(table) == 22
    written = json.loads((folder / "s.json").read_text())
    assert written["metrics"]["v_rand"]["value"] == summary["metrics"]["v_rand"]["value"]
    assert written["split"] == "validation" and written["sections"] == [1, 2]
    at_half = table[table["threshold"] == 0.5].set_index("section")
    assert at_half.loc[1, "v_rand"] == pytest.approx(1.0) and at_half.loc[2, "v_rand"] < 0.7
    assert written["metrics"]["v_rand"]["value"] == pytest.approx(table.groupby("threshold")["v_rand"].mean().max())
    plot_threshold_curves(written, folder / "t.png")
    plot_overlays(folder / "prediction.zarr", folder / "volume.zarr", folder / "o.png")
    plot_predictions(folder / "prediction.zarr", folder / "volume.zarr", folder / "p.png")
    assert all((folder / name).stat().st_size > 5000 for name in ("t.png", "o.png", "p.png"))


def test_evaluation_sections_prefer_test_then_validation():
    info = {"sections": {"train": [0], "validation": [1], "test": [2, 3]}, "shape": [4, 8, 8]}
    assert evaluation_sections(info) == ("test", [2, 3])
    info["sections"]["test"] = []
    assert evaluation_sections(info) == ("validation", [1])
    info["sections"]["validation"] = []
    assert evaluation_sections(info) == ("all", [0, 1, 2, 3])


def test_refuses_unlabelled_data_and_mismatched_predictions(store_and_prediction, tmp_path):
    folder = store_and_prediction
    ingest("u", {"image": {"source": "i"}}, folder / "img.tif", None, tmp_path / "unlabelled.zarr")
    with pytest.raises(InputDataError, match="'u' has no labels to evaluate against"):
        evaluate(folder / "prediction.zarr", tmp_path / "unlabelled.zarr", tmp_path / "a.csv", tmp_path / "a.json")
    root = zarr.open_group(str(tmp_path / "small.zarr"), mode="w")
    root.create_array("0", data=np.zeros((3, 20, 20), np.uint8))
    root.attrs[volume_store.PROVENANCE_KEY] = {}
    with pytest.raises(InputDataError, match=r"small\.zarr: prediction shape \(3, 20, 20\) differs"):
        evaluate(tmp_path / "small.zarr", folder / "volume.zarr", tmp_path / "a.csv", tmp_path / "a.json")
