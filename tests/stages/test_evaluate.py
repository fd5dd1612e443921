"""The evaluation stage: which sections, the table and summary, refusals."""

import json

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr
from helpers import png_summary
from unet_pipeline.core.errors import InputDataError
from unet_pipeline.data import volume_store
from unet_pipeline.stages.evaluate import (
    EvaluationPlan,
    describe,
    evaluate,
    evaluation_plan,
    plot_overlays,
    plot_threshold_curves,
)
from unet_pipeline.stages.ingest import ingest
from unet_pipeline.stages.prediction_figure import plot_predictions


def write_prediction(path, probability, volume_path):
    """A prediction store as the predict stage writes it, recording the checksum of the volume it predicts."""
    root = zarr.open_group(str(path), mode="w")
    root.create_array("0", data=np.rint(probability * 255).astype(np.uint8))
    checksum = volume_store.provenance(volume_store.open_store(volume_path))["image"]["pixel_sha256"]
    root.attrs[volume_store.PROVENANCE_KEY] = {
        "model": "m.pt",
        "model_metadata": {},
        "tta": False,
        "input_pixel_sha256": checksum,
    }


def bare_prediction(path, shape):
    """A probability store that records nothing about where it came from."""
    root = zarr.open_group(str(path), mode="w")
    root.create_array("0", data=np.zeros(shape, np.uint8))
    root.attrs[volume_store.PROVENANCE_KEY] = {}


def two_cell_labels(count):
    labels = np.zeros((count, 40, 40), np.uint8)
    labels[:, 2:18, 2:38] = 255
    labels[:, 22:38, 2:38] = 255
    return labels


def two_cell_volume(folder, sections: dict) -> np.ndarray:
    """Three sections of two cells as img.tif, lab.tif and their volume store volume.zarr; returns the labels."""
    labels = two_cell_labels(3)
    tifffile.imwrite(folder / "img.tif", (labels // 2).astype(np.uint8), photometric="minisblack")
    tifffile.imwrite(folder / "lab.tif", labels, photometric="minisblack")
    config = {"image": {"source": "i"}, "labels": {"source": "l"}, "sections": sections}
    ingest("d", config, folder / "img.tif", folder / "lab.tif", folder / "volume.zarr")
    return labels


@pytest.fixture
def store_and_prediction(tmp_path):
    labels = two_cell_volume(tmp_path, {"train": "0", "validation": "1-2"})
    probability = (labels > 0).astype(np.float32) * 0.8 + 0.1
    probability[2, 18:22, 10] = 0.9  # a 1-px bridge across the membrane of section 2 merges its cells at 0.5
    write_prediction(tmp_path / "prediction.zarr", probability, tmp_path / "volume.zarr")
    return tmp_path


def test_evaluate_writes_table_and_summary(store_and_prediction):
    folder = store_and_prediction
    summary = evaluate(
        folder / "prediction.zarr", folder / "volume.zarr", folder / "s.csv", folder / "s.json", workers=2
    )
    table = pd.read_csv(folder / "s.csv")
    assert sorted(table["section"].unique()) == [1, 2] and len(table) == 22 and set(table["split"]) == {"validation"}
    written = json.loads((folder / "s.json").read_text())
    assert written == json.loads(json.dumps(summary))
    assert written["split"] == "validation" and written["sections"] == [1, 2] and written["held_out"] is False
    at_half = table[table["threshold"] == 0.5].set_index("section")
    assert at_half.loc[1, "v_rand"] == pytest.approx(1.0) and at_half.loc[2, "v_rand"] < 0.7
    means = table.groupby("threshold")["v_rand"].mean()
    assert written["metrics"]["v_rand"]["value"] == pytest.approx(means.max())
    # section 1 is perfect from 0.2 on (its cells are 0.9, membranes 0.1); no threshold removes section 2's bridge
    assert written["metrics"]["v_rand"]["threshold"] == means.idxmax() == 0.2
    assert written["metrics"]["v_rand"]["value"] == pytest.approx((1.0 + 2 / 3) / 2)
    plot_threshold_curves(written, folder / "t.png")
    plot_overlays(folder / "prediction.zarr", folder / "volume.zarr", folder / "o.png")
    plot_predictions(folder / "prediction.zarr", folder / "volume.zarr", folder / "p.png")
    assert png_summary(folder / "t.png")[0] == (378, 900) and png_summary(folder / "t.png")[1] > 20
    assert png_summary(folder / "o.png")[0] == (416, 800), "one overlay panel per evaluated section"
    assert png_summary(folder / "p.png")[0] == (720, 1080), "three sections, image above probability"


def test_held_out_scores_use_the_threshold_chosen_on_validation(tmp_path):
    labels = two_cell_volume(tmp_path, {"train": "0", "validation": "1", "test": "2"})
    probability = (labels > 0).astype(np.float32) * 0.8 + 0.1
    probability[1, 18:22, 10] = 0.65  # validation: a bridge that thresholds from 0.7 remove
    probability[2, 18:22, 10] = 0.35  # test: a bridge that thresholds from 0.4 remove
    write_prediction(tmp_path / "prediction.zarr", probability, tmp_path / "volume.zarr")
    summary = evaluate(tmp_path / "prediction.zarr", tmp_path / "volume.zarr", tmp_path / "s.csv", tmp_path / "s.json")
    table = pd.read_csv(tmp_path / "s.csv")
    assert table.groupby("split")["section"].unique().map(list).to_dict() == {"test": [2], "validation": [1]}
    assert summary["split"] == "test" and summary["threshold_split"] == "validation" and summary["held_out"] is True
    v_rand = summary["metrics"]["v_rand"]
    assert v_rand["threshold"] == 0.7, "the first threshold that is best on validation"
    test_rows = table[table["split"] == "test"].set_index("threshold")
    assert v_rand["value"] == pytest.approx(test_rows.loc[0.7, "v_rand"]) == pytest.approx(1.0)
    assert v_rand["best_over_thresholds"] == {"value": pytest.approx(1.0), "threshold": 0.4}
    assert v_rand["per_threshold"][0.3] == pytest.approx(test_rows.loc[0.3, "v_rand"])
    assert test_rows.loc[0.3, "v_rand"] < 0.7


def test_sections_named_for_test_and_validation_choose_the_threshold_and_are_not_held_out(tmp_path):
    # fine_tuning.py's --stack-sections default names 20-26 for both; the scores used to fall back to the fixed
    # threshold while the summary said "chosen on: validation" and "held out"
    labels = two_cell_volume(tmp_path, {"train": "0", "validation": "1-2", "test": "2"})
    probability = (labels > 0).astype(np.float32) * 0.8 + 0.1
    probability[1:, 18:22, 10] = 0.65  # a bridge that thresholds from 0.7 remove, in both sections
    write_prediction(tmp_path / "prediction.zarr", probability, tmp_path / "volume.zarr")
    summary = evaluate(tmp_path / "prediction.zarr", tmp_path / "volume.zarr", tmp_path / "s.csv", tmp_path / "s.json")
    table = pd.read_csv(tmp_path / "s.csv")
    assert table.groupby("split")["section"].unique().map(list).to_dict() == {"test": [2], "validation": [1, 2]}
    assert summary["threshold_split"] == "validation" and summary["held_out"] is False
    assert summary["metrics"]["v_rand"]["threshold"] == 0.7 and summary["metrics"]["v_rand"]["value"] == 1.0
    assert "(NOT held out; thresholds chosen on: validation)" in describe(summary)


def test_the_summary_of_a_fine_tuned_model_says_what_fine_tuning_gained(tmp_path):
    labels = two_cell_volume(tmp_path, {"train": "0", "validation": "1", "test": "2"})
    write_prediction(tmp_path / "prediction.zarr", (labels > 0) * 0.8 + 0.1, tmp_path / "volume.zarr")
    summary = evaluate(tmp_path / "prediction.zarr", tmp_path / "volume.zarr", tmp_path / "s.csv", tmp_path / "s.json")
    assert "fine-tuned" not in describe(summary)
    record = {"zero_shot_v_rand": 0.9161, "best_v_rand": 0.959, "best_step": 3000, "plateau_step": 2500}
    summary["model"]["training"] = {"init_from": {"path": "isbi/model.pt"}, "fine_tuning": record}
    assert (
        "fine-tuned from isbi/model.pt: validation V_rand (best threshold, no TTA) 0.9161 zero-shot, 0.9590 "
        "best at step 3000, level from step 2500" in describe(summary)
    )
    summary["model"]["training"]["fine_tuning"] = record | {"best_v_rand": 0.9161, "best_step": 0, "plateau_step": 0}
    assert describe(summary).endswith("fine-tuning did not improve on the starting model")
    rising = record | {"verdict": "still rising", "next_step": "train longer: the validation curve was still rising"}
    summary["model"]["training"]["fine_tuning"] = rising
    assert describe(summary).endswith(
        "level from step 2500 (still rising: train longer: the validation curve was still rising)"
    )


def test_evaluation_plan():
    info = {"sections": {"train": [0], "validation": [1], "test": [2, 3]}, "shape": [4, 8, 8]}
    assert evaluation_plan(info) == EvaluationPlan("test", [2, 3], "validation", [1])
    assert evaluation_plan(info).held_out
    info["sections"]["validation"] = []
    assert evaluation_plan(info) == EvaluationPlan("test", [2, 3], None, []) and evaluation_plan(info).held_out
    info["sections"].update(validation=[1], test=[])
    assert evaluation_plan(info) == EvaluationPlan("validation", [1], "validation", [1])
    assert not evaluation_plan(info).held_out
    info["sections"]["validation"] = []
    assert evaluation_plan(info) == EvaluationPlan("all", [0, 1, 2, 3], "all", [0, 1, 2, 3])
    info["sections"].update(validation=[1, 2], test=[2, 3])
    assert not evaluation_plan(info).held_out, "section 2 chose the thresholds"
    assert evaluation_plan(info).splits_of() == {1: ["validation"], 2: ["validation", "test"], 3: ["test"]}


def test_refuses_unlabelled_data_and_mismatched_predictions(store_and_prediction, tmp_path):
    folder = store_and_prediction
    ingest("u", {"image": {"source": "i"}}, folder / "img.tif", None, tmp_path / "unlabelled.zarr")
    with pytest.raises(InputDataError, match="'u' has no labels to evaluate against"):
        evaluate(folder / "prediction.zarr", tmp_path / "unlabelled.zarr", tmp_path / "a.csv", tmp_path / "a.json")
    bare_prediction(tmp_path / "small.zarr", (3, 20, 20))
    with pytest.raises(InputDataError, match=r"small\.zarr: prediction shape \(3, 20, 20\) differs"):
        evaluate(tmp_path / "small.zarr", folder / "volume.zarr", tmp_path / "a.csv", tmp_path / "a.json")
    # the same shape, but a prediction of another volume
    tifffile.imwrite(tmp_path / "other.tif", np.full((3, 40, 40), 7, np.uint8), photometric="minisblack")
    ingest("o", {"image": {"source": "i"}}, tmp_path / "other.tif", None, tmp_path / "other.zarr")
    write_prediction(tmp_path / "of-other.zarr", np.zeros((3, 40, 40)), tmp_path / "other.zarr")
    with pytest.raises(
        InputDataError, match=r"of-other\.zarr: predicts another volume \(input pixel sha256 [0-9a-f]{64}\) than"
    ):
        evaluate(tmp_path / "of-other.zarr", folder / "volume.zarr", tmp_path / "a.csv", tmp_path / "a.json")
    bare_prediction(tmp_path / "unknown.zarr", (3, 40, 40))
    with pytest.raises(InputDataError, match=r"unknown\.zarr: records no input checksum"):
        evaluate(tmp_path / "unknown.zarr", folder / "volume.zarr", tmp_path / "a.csv", tmp_path / "a.json")
    assert not (tmp_path / "a.csv").exists() and not (tmp_path / "a.json").exists()
