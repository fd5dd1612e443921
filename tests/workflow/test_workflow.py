"""The workflow as users run it: through the snakemake command line."""

import base64
import copy
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr
from helpers import REPO, png_summary, run_snakemake, tiny_config, valid_ome_zarr, write_config
from ome_zarr_models.v05.image import Image
from ome_zarr_models.v05.labels import Labels
from unet_pipeline.data import volume_store
from unet_pipeline.metrics.scores import threshold_row
from unet_pipeline.metrics.summary import best_threshold, smoothed
from unet_pipeline.segmentation.methods import SegmentationOptions
from unet_pipeline.segmentation.proposal import proposal_of
from unet_pipeline.transforms.cells import cells_of

pytestmark = pytest.mark.workflow


def job_stats(output: str) -> dict:
    """Snakemake's own "Job stats" table: rule -> number of jobs."""
    table = output.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)}


def test_lint_is_clean():
    result = run_snakemake(REPO, "--lint")
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_default_config_dag_resolves(tmp_path):
    result = run_snakemake(tmp_path, "-n", "--configfile", str(REPO / "config" / "config.yaml"))
    assert job_stats(result.stdout) == {
        "download": 3,
        "ingest": 2,
        "weight_maps": 1,
        "augment": 1,
        "train": 1,
        "predict": 2,
        "submission_tiff": 1,
        "evaluate": 1,
        "prediction_figure": 2,
        "headline_scores": 1,
        "segment": 2,
        "cells_submission_tiff": 1,
        "export": 1,
        "all": 1,
        "total": 20,
    }


def test_tiny_pipeline_runs_end_to_end(serve, tiny_isbi, tmp_path):
    base, requests = serve(tiny_isbi)
    config = tiny_config(base)
    config["datasets"]["tiny_test"]["base"] = tiny_isbi.as_uri()  # a file:// source is read in place
    write_config(tmp_path / "config.yaml", config)
    run_snakemake(tmp_path, "--configfile", "config.yaml")

    results = tmp_path / "results"
    train = volume_store.open_store(results / "tiny" / "volume.zarr")
    np.testing.assert_array_equal(train[volume_store.IMAGE_PATH][:], tifffile.imread(tiny_isbi / "train-volume.tif"))
    np.testing.assert_array_equal(
        train[volume_store.LABELS_PATH][:], tifffile.imread(tiny_isbi / "train-labels.tif") == 255
    )
    assert volume_store.provenance(train)["sections"] == {"train": [0, 1], "validation": [2], "test": []}
    test = volume_store.open_store(results / "tiny_test" / "volume.zarr")
    np.testing.assert_array_equal(test[volume_store.IMAGE_PATH][:], tifffile.imread(tiny_isbi / "test-volume.tif"))
    assert sorted(path for path, _ in requests) == ["/train-labels.tif", "/train-volume.tif"]
    downloaded = results / "downloads" / "tiny" / "image" / "train-volume.tif"
    assert downloaded.read_bytes() == (tiny_isbi / "train-volume.tif").read_bytes()
    assert not (results / "downloads" / "tiny_test").exists(), "local sources are used in place"
    weights = volume_store.open_store(results / "tiny" / "weights.zarr")[volume_store.IMAGE_PATH]
    assert weights.shape == (3, 128, 128) and weights.dtype == np.float32 and weights[:].max() > 1
    shape, colours = png_summary(results / "tiny" / "figures" / "weight_map.png")
    assert shape == (480, 1350) and colours > 200
    assert not (results / "tiny_test" / "weights.zarr").exists(), "unlabelled data has no weight maps"
    augmented = volume_store.open_store(results / "tiny" / "augmented" / "tiny.zarr")
    assert augmented["inputs"].shape == (6, 92, 92) and augmented["labels"].shape == (6, 52, 52)
    shape, colours = png_summary(results / "tiny" / "figures" / "augmented_tiny.png")
    assert shape == (4 * 272, 800) and colours > 200, "four samples: input, labels, weights"
    model = json.loads((results / "tiny" / "models" / "tiny" / "model.json").read_text())
    assert model["training"]["iterations"] == 4 and model["output_size"] == 52
    for name in ("model.pt", "model.onnx", "tiny.bioimageio.zip", "training_curve.csv", "training_curve.png"):
        assert (results / "tiny" / "models" / "tiny" / name).stat().st_size > 0
    for name in ("tiny", "tiny_test"):
        probabilities = volume_store.open_store(results / name / "predictions" / "tiny.zarr")[volume_store.IMAGE_PATH]
        assert probabilities.shape == (3, 128, 128) and probabilities.dtype == np.uint8
    assert tifffile.imread(results / "tiny_test" / "predictions" / "tiny.tif").dtype == np.float32
    summary = json.loads((results / "tiny" / "evaluation" / "tiny" / "summary.json").read_text())
    assert summary["split"] == "validation" and summary["sections"] == [2] and summary["held_out"] is False
    table = pd.read_csv(results / "tiny" / "evaluation" / "tiny" / "sections.csv").set_index("threshold")
    assert len(table) == 11 and set(table["section"]) == {2}
    for name, metric in summary["metrics"].items():  # one section: the stack scores are that section's
        row = table.loc[metric["threshold"]]
        tp, fp, fn = row["pixel_tp"], row["pixel_fp"], row["pixel_fn"]
        value = {
            "rand_error": 1 - row["rand_fscore"],
            "pixel_error": 1 - 2 * tp / (2 * tp + fp + fn),
            "misclassified": (fp + fn) / (128 * 128),
            "iou": tp / (tp + fp + fn),
        }.get(name, row.get(name))
        assert metric["value"] == pytest.approx(value, abs=1e-9), name
    assert summary["metrics"]["v_rand"]["value"] == pytest.approx(table["v_rand"].max(), abs=1e-6)
    assert not (results / "tiny_test" / "evaluation").exists(), "data without labels is not evaluated"
    # Cells: the segmentation at the evaluation's V_rand setting scores exactly what the evaluation reported
    cells = zarr.open_group(str(results / "tiny" / "segmentation" / "tiny.zarr"), mode="r")["cells"]["0"]
    truth = cells_of(volume_store.open_store(results / "tiny" / "volume.zarr")[volume_store.LABELS_PATH][2])
    scored = threshold_row(truth, proposal_of(cells[2]).astype(np.float32), 0.5)
    assert scored["v_rand"] == summary["cells"]["metrics"]["v_rand"]["value"]
    searched = pd.read_csv(results / "tiny" / "evaluation" / "tiny" / "cells.csv")
    assert searched["threshold"].tolist() == list(SegmentationOptions().search), "the schema's search, one section"
    window = summary["cells"]["choice_window"]
    assert window == SegmentationOptions().choice_window > 0
    curve = smoothed(searched.set_index("threshold")["v_rand"].to_dict(), window)
    assert summary["cells"]["metrics"]["v_rand"]["threshold"] == best_threshold(curve, True), "chosen in the window"
    submitted = tifffile.imread(results / "tiny_test" / "segmentation" / "tiny.tif")
    assert submitted.dtype == np.float32 and submitted.shape == (3, 128, 128)
    cell_rows = pd.read_csv(results / "tiny" / "segmentation" / "tiny_cells.csv")
    assert cells.dtype == np.uint32 and len(cell_rows) == sum(len(np.unique(c[c > 0])) for c in cells[:])
    # Every store is valid OME-Zarr 0.5 to the community's validator (labels and pyramids included)
    for store in ("tiny/volume.zarr", "tiny/weights.zarr", "tiny_test/volume.zarr"):
        assert isinstance(valid_ome_zarr(results / store), Image), store
    for name in ("tiny", "tiny_test"):
        assert isinstance(valid_ome_zarr(results / name / "predictions" / "tiny.zarr"), Image)
        assert isinstance(valid_ome_zarr(results / name / "segmentation" / "tiny.zarr"), Labels)
    for name in ("tiny", "tiny_test"):
        shape, colours = png_summary(results / name / "figures" / "prediction_tiny.png")
        assert shape == (720, 1080) and colours > 200

    run_snakemake(tmp_path, "--configfile", "config.yaml", "--report", "report.html")
    report = (tmp_path / "report.html").read_text()
    table = (results / "tiny" / "evaluation" / "tiny" / "sections.csv").read_bytes()
    embedded = re.search(r"data:text/csv;charset=utf8;filename=sections\.csv;base64,([A-Za-z0-9+/=]+)", report)
    assert embedded and base64.b64decode(embedded.group(1)) == table, "the report carries the metric table"
    for category in ("Weight maps", "Augmentation", "Training", "Evaluation", "Predictions", "Headline scores"):
        assert category in report
    headline = pd.read_csv(results / "evaluation" / "headline_scores_tiny.csv").set_index("score")
    assert headline.columns.tolist() == [
        "tiny / tiny: threshold on p",
        "tiny / tiny: cells, quantile_linkage (edge_threshold)",
    ]
    v_rand = summary["metrics"]["v_rand"]
    cell = f"{v_rand['value']:.6f} at {v_rand['threshold']}"
    assert headline.loc["V_rand"].iloc[0].startswith(cell) and "warping error" in headline.index
    start = report.index("var workflow_desc = ") + len("var workflow_desc = ")
    front_page = json.JSONDecoder().raw_decode(report[start:])[0]
    assert "Headline scores (tiny)" in front_page and cell in front_page, "the front page opens with the scores"

    # A user's new uint8 Zarr v3 stack, predicted with the existing model: only that dataset's stages run, and
    # the stack is used in place (linked from the volume store, not copied)
    new_stack = tmp_path / "new-stack.zarr"
    zarr.create_array(str(new_stack), data=tifffile.imread(tiny_isbi / "test-volume.tif")[:2, :100, :90])
    with_new = copy.deepcopy(config)
    with_new["datasets"]["newstack"] = {"image": {"source": str(new_stack)}, "sections": {"test": "all"}}
    with_new["prediction"] = config.get("prediction", {}) | {"normalisation": "volume"}  # fitted to the new stack
    write_config(tmp_path / "new.yaml", with_new)
    targets = ["results/newstack/predictions/tiny.zarr", "results/newstack/figures/prediction_tiny.png"]
    result = run_snakemake(tmp_path, *targets, "--configfile", "new.yaml")
    assert job_stats(result.stdout + result.stderr) == {"ingest": 1, "predict": 1, "prediction_figure": 1, "total": 3}
    assert volume_store.open_store(results / "newstack" / "predictions" / "tiny.zarr")[
        volume_store.IMAGE_PATH
    ].shape == (2, 100, 90)
    assert (results / "newstack" / "volume.zarr" / "0" / "c").resolve() == (new_stack / "c").resolve()
    recorded = volume_store.provenance(volume_store.open_store(results / "newstack" / "predictions" / "tiny.zarr"))
    assert recorded["normalisation"]["mode"] == "volume" and len(recorded["normalisation"]["volume_percentiles"]) == 2
    log = (results / "logs" / "predict" / "newstack.tiny.log").read_text()  # prediction.input_size null: measured
    assert f"tile size {recorded['input_size']} chosen on cpu" in log, log

    # Changing a stage's parameters reruns that stage and those after it, nothing before it
    changed = copy.deepcopy(config)
    changed["weight_map"] = {"sigma": 4.0}
    write_config(tmp_path / "changed.yaml", changed)
    dry_run = run_snakemake(tmp_path, "--configfile", "changed.yaml", "-n")
    stats = job_stats(dry_run.stdout + dry_run.stderr)
    assert "download" not in stats and "ingest" not in stats, stats
    assert {rule: stats.get(rule) for rule in ("weight_maps", "augment", "train", "predict", "evaluate")} == {
        "weight_maps": 1,
        "augment": 1,
        "train": 1,
        "predict": 2,
        "evaluate": 1,
    }, stats
    logs = ["download/tiny.image.train-volume.tif.log", "ingest/tiny.log", "ingest/tiny_test.log"]
    logs += [
        "weight_maps/tiny.log",
        "augment/tiny.tiny.log",
        "train/tiny.tiny.log",
        "predict/tiny_test.tiny.log",
        "evaluate/tiny.tiny.log",
    ]
    for log in logs:
        assert (results / "logs" / log).stat().st_size > 0
    for bench in (
        "download/tiny.labels.train-labels.tif.tsv",
        "ingest/tiny.tsv",
        "weight_maps/tiny.tsv",
        "augment/tiny.tiny.tsv",
        "train/tiny.tiny.tsv",
        "predict/tiny.tiny.tsv",
        "submission_tiff/tiny_test.tiny.tsv",
        "evaluate/tiny.tiny.tsv",
    ):
        assert "max_rss" in (results / "benchmarks" / bench).read_text()


def test_the_dot_test_config_runs_as_documented(tmp_path, isbi_dir):
    """`snakemake --directory .test --cores 2` on the ISBI files beside the checkout, as CI runs it."""
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO / ".test" / "config", checkout / ".test" / "config")
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "isbi2012").symlink_to(isbi_dir)  # ../../shared from .test
    run_snakemake(checkout / ".test")
    results = checkout / ".test" / "results"
    prediction = volume_store.open_store(results / "tiny_test" / "predictions" / "tiny.zarr")[volume_store.IMAGE_PATH]
    assert prediction.shape == (30, 512, 512)
    summary = json.loads((results / "tiny" / "evaluation" / "tiny" / "summary.json").read_text())
    assert summary["sections"] == [2] and 0 <= summary["metrics"]["v_rand"]["value"] <= 1
    assert tifffile.imread(results / "tiny_test" / "predictions" / "tiny.tif").shape == (30, 512, 512)


def test_failed_download_leaves_no_output_and_names_the_url(http_server, tmp_path):
    base, _ = http_server
    config = tiny_config(base)
    config["datasets"]["tiny"]["image"]["source"] = "no-such-volume.tif"
    write_config(tmp_path / "config.yaml", config)
    result = run_snakemake(tmp_path, "--configfile", "config.yaml", "--keep-going", check=False)
    assert result.returncode != 0
    log = (tmp_path / "results" / "logs" / "download" / "tiny.image.no-such-volume.tif.log").read_text()
    assert f"{base}/no-such-volume.tif: HTTP 404" in log
    assert f"{base}/no-such-volume.tif: HTTP 404" in result.stderr + result.stdout
    # profiles/default (show-failed-logs) puts the failed job's log, with its reason, on the console
    assert "Logfile results/logs/download/tiny.image.no-such-volume.tif.log:" in result.stderr + result.stdout
    image_dir = tmp_path / "results" / "downloads" / "tiny" / "image"
    assert not image_dir.exists() or list(image_dir.iterdir()) == []
    assert not (tmp_path / "results" / "tiny" / "volume.zarr").exists()


def test_bad_config_is_rejected_by_the_schema(tmp_path):
    config = tiny_config("/nowhere")
    config["datasets"]["tiny"]["labels"]["type"] = "semantic"
    write_config(tmp_path / "config.yaml", config)
    result = run_snakemake(tmp_path, "--configfile", "config.yaml", "-n", check=False)
    assert result.returncode != 0
    assert "'semantic' is not one of ['binary', 'instance']" in result.stderr + result.stdout


def test_sharded_prediction_through_the_workflow_equals_one_job(tiny_isbi, tmp_path):
    """prediction.shards: auto (one shard per SHARD_GIB GiB: here 1, after ingest, a checkpoint) and 3, against 1."""
    config = tiny_config(str(tiny_isbi))
    config["prediction"]["input_size"] = 92  # one tile for all three: a measured one may differ by run
    predictions = {}
    for shards in ("auto", 3, 1):
        config.setdefault("prediction", {})["shards"] = shards
        write_config(tmp_path / "config.yaml", config)
        target = "results/tiny_test/predictions/tiny.zarr"
        shutil.rmtree(tmp_path / target, ignore_errors=True)
        shutil.rmtree(tmp_path / "results" / "logs" / "predict_shard", ignore_errors=True)
        run_snakemake(tmp_path, target, "--configfile", "config.yaml")
        logs = sorted(p.name for p in (tmp_path / "results" / "logs").glob("predict_shard/*.log"))
        count = {"auto": 1, 3: 3, 1: 0}[shards]
        assert logs == [f"tiny_test.tiny.{i}-of-{count}.log" for i in range(count)], (shards, logs)
        predictions[shards] = volume_store.open_store(tmp_path / target)[volume_store.IMAGE_PATH][:]
    np.testing.assert_array_equal(predictions["auto"], predictions[1])
    np.testing.assert_array_equal(predictions[3], predictions[1])

    # and 3D cells of that prediction, as a user asks for them: edges across sections, ids over the volume
    config["segmentation"] = {"dimensions": 3, "edge_threshold": 0.5}
    write_config(tmp_path / "config.yaml", config)
    run_snakemake(tmp_path, "results/tiny_test/segmentation/tiny.zarr", "--configfile", "config.yaml")
    cells = volume_store.open_store(tmp_path / "results/tiny_test/segmentation/tiny.zarr")["cells"]["0"][:]
    table = pd.read_csv(tmp_path / "results/tiny_test/segmentation/tiny_cells.csv")
    assert cells.shape == (3, 128, 128) and table["label"].tolist() == list(range(1, cells.max() + 1))
    assert {"front", "back", "centroid_z"} <= set(table.columns) and table["area"].sum() == (cells > 0).sum()


def test_a_stack_of_another_pixel_size_is_named_by_predict_and_resampled_by_ingest(tiny_isbi, tmp_path):
    """The test stack declared at 2 nm: the ISBI-trained (4 nm) model's predict log names the factor and
    `resample_to`; declared with `resample_to: [4, 4]`, ingest halves its sections and the warning is gone."""
    config = tiny_config(str(tiny_isbi))
    config["prediction"]["input_size"] = 92
    fine = copy.deepcopy(config["datasets"]["tiny_test"]) | {"voxel_size": [50.0, 2.0, 2.0]}
    config["datasets"] |= {"fine": fine, "fine_resampled": fine | {"resample_to": [4.0, 4.0]}}
    write_config(tmp_path / "config.yaml", config)
    targets = [f"results/{name}/predictions/tiny.zarr" for name in ("fine", "fine_resampled")]
    run_snakemake(tmp_path, *targets, "--configfile", "config.yaml")
    logs = tmp_path / "results" / "logs"
    warned = (logs / "predict" / "fine.tiny.log").read_text()
    assert "pixels of [2.0, 2.0] nm (y, x), [0.5, 0.5] times those the model was trained on" in warned, warned
    assert "give the dataset `resample_to`" in warned
    assert "times those the model was trained on" not in (logs / "predict" / "fine_resampled.tiny.log").read_text()
    assert "sections of [128, 128] resampled to [64, 64]" in (logs / "ingest" / "fine_resampled.log").read_text()
    volume = volume_store.provenance(volume_store.open_store(tmp_path / "results/fine_resampled/volume.zarr"))
    assert volume["shape"] == [3, 64, 64] and volume["resampled_from"] == [50.0, 2.0, 2.0]
    prediction = volume_store.open_store(tmp_path / targets[1])
    assert prediction[volume_store.IMAGE_PATH].shape == (3, 64, 64)
    assert volume_store.provenance(prediction)["pixel_size"]["matches"]
