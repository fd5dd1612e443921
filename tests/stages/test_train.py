"""Training: it learns, it resumes exactly, it writes a self-describing model."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import tifffile
import torch
import zarr
from helpers import REPO
from unet_pipeline.core.checksums import sha256_of_file
from unet_pipeline.core.errors import InputDataError, PipelineError
from unet_pipeline.data import volume_store
from unet_pipeline.inference.overlap_tile import TilePredictor
from unet_pipeline.models.ternausnet import VGG11_CONVOLUTIONS
from unet_pipeline.models.unet import UNetConfig, load_model
from unet_pipeline.stages.augment import write_augmented_set
from unet_pipeline.stages.ingest import ingest
from unet_pipeline.stages.predict import predict_volume
from unet_pipeline.stages.train import AugmentedSet, TrainingJob, train
from unet_pipeline.stages.weight_maps import write_weight_maps
from unet_pipeline.training.batches import DeviceBatches
from unet_pipeline.training.loss import weighted_cross_entropy
from unet_pipeline.training.optimisation import learning_rate
from unet_pipeline.training.options import TrainingOptions
from unet_pipeline.training.validation import validate

pytestmark = pytest.mark.workflow

CONFIG = UNetConfig(levels=3, base_channels=8, dropout=0.1)
INPUT = 92
AUGMENTATION = {
    "seed": 0,
    "samples": 24,
    "samples_per_task": 24,
    "shift": {"enabled": True},
    "flip": {"enabled": True},
    "rotation": {"enabled": True, "max_degrees": 180},
    "elastic": {"enabled": True, "grid_points": 3, "sigma": 4.0},
    "intensity": {"enabled": False, "brightness": 0.1, "contrast": 0.2, "gamma": 0.2},
}


def synthetic_sections(rng, count=4, size=96):
    """Bright discs (cells) on a dark, noisy background."""
    yy, xx = np.indices((size, size))
    labels = np.zeros((count, size, size), bool)
    for z in range(count):
        for _ in range(6):
            cy, cx, r = rng.integers(10, size - 10), rng.integers(10, size - 10), rng.integers(5, 12)
            labels[z] |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    image = np.clip(60 + 120 * labels + rng.normal(0, 25, labels.shape), 0, 255).astype(np.uint8)
    return image, labels


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return prepared(tmp_path_factory.mktemp("synthetic"), *synthetic_sections(np.random.default_rng(0)))


def prepared(folder, image, labels, name="synthetic"):
    """``folder`` with the stack ingested, its weight maps and its augmented set, as the workflow makes them."""
    tifffile.imwrite(folder / "image.tif", image, photometric="minisblack")
    tifffile.imwrite(folder / "labels.tif", np.where(labels, 255, 0).astype(np.uint8), photometric="minisblack")
    config = {"image": {"source": "i"}, "labels": {"source": "l"}, "sections": {"train": "0-2", "validation": "3"}}
    ingest(name, config, folder / "image.tif", folder / "labels.tif", folder / "volume.zarr")
    write_weight_maps(folder / "volume.zarr", folder / "weights.zarr")
    options = AUGMENTATION
    write_augmented_set(
        folder / "volume.zarr",
        folder / "weights.zarr",
        folder / "augmented.zarr",
        options,
        CONFIG.geometry,
        INPUT,
        progress=False,
    )
    return folder


def outputs(folder):
    folder.mkdir(parents=True, exist_ok=True)
    names = {
        "model": "model.pt",
        "metadata": "model.json",
        "curve_csv": "curve.csv",
        "curve_png": "curve.png",
    }
    return {key: folder / name for key, name in names.items()}


def job(
    synthetic, folder, model=CONFIG, augmented="augmented.zarr", processes=1, init_from=None, **options
) -> TrainingJob:
    """A training run on the synthetic set (``augmented``: a name in it or a path of its own)."""
    settings = {
        "batch_size": 2,
        "optimizer": "adam",
        "learning_rate": 2e-3,
        "validate_every": 5,
        "log_every": 5,
        **options,
    }
    return TrainingJob(
        augmented=synthetic / augmented,
        volume=synthetic / "volume.zarr",
        outputs=outputs(folder),
        checkpoints=folder / "checkpoints",
        model=model,
        options=TrainingOptions(**settings),
        preset="test",
        threads=2,
        processes=processes,
        init_from=init_from,
    )


def run(synthetic, folder, **options):
    return train(job(synthetic, folder, **options))


def test_training_drives_the_loss_down_and_writes_the_model(synthetic, tmp_path):
    # float32: the thresholds below are tuned to it; on this tiny set one merge in bf16 moves V_rand by 0.2
    # (bf16 training is measured at full size by benchmarks/laptop_accuracy.py)
    metadata = run(synthetic, tmp_path, iterations=60, validate_every=30, log_every=10, amp="none")
    curve = [line.split(",") for line in (tmp_path / "curve.csv").read_text().splitlines()[1:]]
    losses = [float(row[2]) for row in curve if row[0] == "train"]
    assert losses[-1] < 0.6 * losses[0], losses
    validation = [row for row in csv.DictReader((tmp_path / "curve.csv").open()) if row["split"] == "validation"]
    labels = volume_store.open_store(synthetic / "volume.zarr")[volume_store.LABELS_PATH][3]
    trivial = min(labels.mean(), 1 - labels.mean())  # all background or all foreground
    final = validation[-1]
    assert len(validation) == 2 and float(final["misclassified"]) < 0.5 * trivial, (validation, trivial)
    assert float(final["v_rand"]) > 0.8 and float(final["iou"]) > 0.7, validation
    written = json.loads((tmp_path / "model.json").read_text())
    assert written == metadata
    assert written["input_size"] == INPUT and written["output_size"] == 52 and written["tile_step"] == 52
    best = max(validation, key=lambda row: (float(row["v_rand_best"]), -float(row["misclassified"])))
    assert written["training"]["best"]["step"] == int(best["step"])
    assert written["training"]["best"]["v_rand_best"] == pytest.approx(float(best["v_rand_best"]), abs=1e-12)
    assert float(best["v_rand_best"]) >= float(best["v_rand"]), "the best threshold includes 0.5"
    tta = written["training"]["tta"]  # the choice prediction.tta: auto follows, made on the validation sections
    assert tta["sections"] == [3] and tta["chosen"] == (tta["v_rand"]["with"] > tta["v_rand"]["without"])
    # the kept checkpoint scored again without TTA, as the evaluation scores it: exactly what chose it
    assert tta["v_rand"]["without"] == pytest.approx(float(best["v_rand_best"]), abs=1e-12)
    model, loaded = load_model(tmp_path / "model.pt")
    assert loaded["normalisation"] == metadata["normalisation"]
    best = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=False)["model"]
    assert all(torch.equal(best[key], value) for key, value in model.state_dict().items()), (
        "model.pt holds the best weights"
    )
    assert (tmp_path / "curve.png").stat().st_size > 5000


def test_resume_continues_exactly_where_it_stopped(synthetic, tmp_path):
    run(synthetic, tmp_path / "straight", iterations=10)
    run(synthetic, tmp_path / "resumed", iterations=5)  # stops after the checkpoint of step 5
    run(synthetic, tmp_path / "resumed", iterations=10)  # resumes from it
    straight = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=False)
    resumed = torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt", weights_only=False)
    assert straight["step"] == resumed["step"] == 10
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    for a, b in zip(straight["optimizer"]["state"].values(), resumed["optimizer"]["state"].values()):
        for name in a:
            assert torch.equal(a[name], b[name]), name
    keys = ("split", "step", "loss", "misclassified", "v_rand")
    assert [[r[k] for k in keys] for r in straight["rows"]] == [[r[k] for k in keys] for r in resumed["rows"]]


def test_a_killed_run_resumes_from_its_last_checkpoint(synthetic, tmp_path):
    script = (
        "from pathlib import Path; from test_train import run;"
        f"run(Path({str(synthetic)!r}), Path({str(tmp_path)!r}), iterations=100000, validate_every=3, log_every=3)"
    )
    path = os.pathsep.join([str(REPO / "tests"), str(REPO / "tests" / "stages")])  # helpers and test_train
    process = subprocess.Popen([sys.executable, "-c", script], env=os.environ | {"PYTHONPATH": path})
    last = tmp_path / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while not last.exists() and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert last.exists(), "the run wrote a checkpoint before it was killed"
    stopped_at = torch.load(last, weights_only=False)["step"]
    assert not (tmp_path / "model.pt").exists(), "a killed run leaves no model"
    run(synthetic, tmp_path, iterations=stopped_at + 3, validate_every=3, log_every=3)
    rows = json.loads((tmp_path / "model.json").read_text())["training"]
    assert torch.load(last, weights_only=False)["step"] == stopped_at + 3
    assert rows["iterations"] == stopped_at + 3


def test_a_changed_configuration_starts_over(synthetic, tmp_path, caplog):
    run(synthetic, tmp_path / "changed", iterations=5)
    with caplog.at_level("INFO"):
        run(synthetic, tmp_path / "changed", iterations=5, learning_rate=1e-3)
    assert "ignoring" in caplog.text and "resuming" not in caplog.text
    run(synthetic, tmp_path / "fresh", iterations=5, learning_rate=1e-3)
    changed = torch.load(tmp_path / "changed" / "checkpoints" / "last.pt", weights_only=False)["model"]
    fresh = torch.load(tmp_path / "fresh" / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(value, fresh[key]) for key, value in changed.items()), "the same weights as a fresh run"


def test_a_missing_best_checkpoint_is_an_error(synthetic, tmp_path):
    run(synthetic, tmp_path, iterations=5)
    (tmp_path / "checkpoints" / "best.pt").unlink()
    (tmp_path / "model.pt").unlink()
    with pytest.raises(PipelineError, match=r"best\.pt: the best checkpoint \(step 5\) is missing"):
        run(synthetic, tmp_path, iterations=5)
    assert not (tmp_path / "model.pt").exists()


def test_tiles_that_do_not_fit_the_network_are_refused(synthetic, tmp_path):
    with pytest.raises(InputDataError, match=r"tiles of 92 -> 52 px do not fit the network \(92 -> 4 px\)"):
        run(synthetic, tmp_path, model=UNetConfig(levels=4, base_channels=4), iterations=1)


def test_learning_rate_schedules():
    constant = TrainingOptions(iterations=100, learning_rate=0.1)
    assert learning_rate(constant, 0) == learning_rate(constant, 99) == 0.1
    poly = TrainingOptions(iterations=100, learning_rate=0.1, schedule="poly", warmup=10)
    assert learning_rate(poly, 0) == pytest.approx(0.01) and learning_rate(poly, 10) == pytest.approx(0.1)
    assert learning_rate(poly, 99) < 0.01
    cosine = TrainingOptions(iterations=100, learning_rate=0.1, schedule="cosine")
    assert learning_rate(cosine, 50) == pytest.approx(0.05)


def test_normalisation_comes_from_the_training_sections(synthetic, tmp_path):
    metadata = run(synthetic, tmp_path, iterations=1)
    image = volume_store.open_store(synthetic / "volume.zarr")[volume_store.IMAGE_PATH][:3] / 255.0
    assert metadata["normalisation"]["mean"] == pytest.approx(image.mean())
    assert metadata["normalisation"]["std"] == pytest.approx(image.std())


def test_ternausnet_trains_from_vgg11_weights_and_predicts(synthetic, tmp_path):
    from helpers import vgg11_state_dict
    from unet_pipeline.stages.predict import predict_volume

    state = vgg11_state_dict()
    torch.save(state, tmp_path / "vgg11.pth")
    config = UNetConfig(
        architecture="ternausnet", base_channels=4, encoder_weights=str(tmp_path / "vgg11.pth"), init="lecun_uniform"
    )
    options = {**AUGMENTATION, "samples": 8, "samples_per_task": 8, "flip": {"enabled": False}}
    options["rotation"] = {"enabled": False, "max_degrees": 0}
    write_augmented_set(
        synthetic / "volume.zarr",
        synthetic / "weights.zarr",
        tmp_path / "aug.zarr",
        options,
        config.geometry,
        64,
        progress=False,
    )
    learning_rate = 1e-4
    metadata = run(
        synthetic,
        tmp_path / "model",
        model=config,
        augmented=tmp_path / "aug.zarr",
        iterations=30,
        learning_rate=learning_rate,
        validate_every=30,
        log_every=10,
    )
    assert metadata["model"]["architecture"] == "ternausnet" and metadata["output_size"] == 64
    losses = [
        float(row["loss"])
        for row in csv.DictReader((tmp_path / "model" / "curve.csv").open())
        if row["split"] == "train"
    ]
    assert losses[-1] < 0.7 * losses[0], losses
    model, _ = load_model(tmp_path / "model" / "model.pt")
    for block, (_, _, index) in list(zip(model.encoder, VGG11_CONVOLUTIONS))[1:]:
        # Adam moves a weight by at most about one learning rate per step: the encoder started from the file
        assert (block[0].weight - state[f"features.{index}.weight"]).abs().max() <= 30 * learning_rate * 1.1
    info = predict_volume(
        tmp_path / "model" / "model.pt", synthetic / "volume.zarr", tmp_path / "p.zarr", dtype="float16"
    )
    probability = volume_store.open_store(tmp_path / "p.zarr")[volume_store.IMAGE_PATH][:]
    assert probability.shape == (4, 96, 96) and info["tile_step"] == 64
    assert np.isfinite(probability.astype(np.float32)).all()


def test_data_parallel_training_follows_the_single_process_curve(synthetic, tmp_path):
    """2 gloo processes with 2 tiles each take the steps of one process with batches of 4 (no dropout)."""
    model = UNetConfig(levels=3, base_channels=8, dropout=0.0)
    settings = {"model": model, "iterations": 8, "batch_size": 4, "validate_every": 4, "log_every": 1, "amp": "none"}
    single = run(synthetic, tmp_path / "single", **settings)
    parallel = run(synthetic, tmp_path / "parallel", processes=2, **settings)
    assert single["training"]["processes"] == 1 and parallel["training"]["processes"] == 2
    curves = [list(csv.DictReader((tmp_path / name / "curve.csv").open())) for name in ("single", "parallel")]
    for split, fields in (("train", ["loss"]), ("validation", ["misclassified", "v_rand", "iou"])):
        rows = [[row for row in curve if row["split"] == split] for curve in curves]
        assert len(rows[0]) == len(rows[1]) == (8 if split == "train" else 2)
        for one, two in zip(*rows):
            for name in fields:
                assert float(two[name]) == pytest.approx(float(one[name]), rel=1e-5, abs=1e-7), (split, one, two)
    losses = [float(row["loss"]) for row in curves[1] if row["split"] == "train"]
    assert len(set(losses)) == len(losses), "the steps differ, so a matching curve is not a constant"
    weights = [torch.load(tmp_path / name / "model.pt", weights_only=False) for name in ("single", "parallel")]
    state = [w["state_dict"] for w in weights]
    for key, value in state[0].items():
        torch.testing.assert_close(state[1][key], value, rtol=1e-3, atol=1e-5)


def test_data_parallel_training_resumes_and_refuses_an_uneven_batch(synthetic, tmp_path):
    settings = {"processes": 2, "batch_size": 4, "log_every": 1, "validate_every": 2}
    run(synthetic, tmp_path / "straight", iterations=4, **settings)
    run(synthetic, tmp_path / "resumed", iterations=2, **settings)
    run(synthetic, tmp_path / "resumed", iterations=4, **settings)  # resumes from step 2, dropout states per rank
    straight, resumed = (
        torch.load(tmp_path / name / "checkpoints" / "last.pt", weights_only=False) for name in ("straight", "resumed")
    )
    assert resumed["step"] == 4 and len(resumed["rng"]) == 2
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    with pytest.raises(PipelineError, match="batch_size 3 does not divide among 2 GPUs"):
        run(synthetic, tmp_path / "uneven", iterations=2, processes=2, batch_size=3)
    assert not (tmp_path / "uneven" / "model.pt").exists()


def test_fine_tuning_starts_from_the_given_weights(synthetic, tmp_path):
    """The first step's loss is the loaded model's loss on that batch; a different network is refused."""
    model = UNetConfig(levels=3, base_channels=8, dropout=0.0)
    base = run(synthetic, tmp_path / "base", model=model, iterations=6)
    start = tmp_path / "base" / "model.pt"
    # float32 (amp none), as the reference below: bf16 autocast on this CPU would round the loss differently
    tuned = run(synthetic, tmp_path / "tuned", model=model, init_from=start, iterations=3, log_every=1, amp="none")
    loaded, _ = load_model(start)
    options = TrainingOptions(iterations=3, batch_size=2)
    data = AugmentedSet(synthetic / "augmented.zarr")
    inputs, labels, weights = DeviceBatches(data.arrays, options, base["normalisation"], torch.device("cpu"))(0)
    with torch.no_grad():
        expected = weighted_cross_entropy(loaded.train()(inputs), labels, weights).item()
    first = next(row for row in csv.DictReader((tmp_path / "tuned" / "curve.csv").open()) if row["split"] == "train")
    assert float(first["loss"]) == pytest.approx(expected, rel=1e-5)
    fresh = run(synthetic, tmp_path / "fresh", model=model, iterations=1, log_every=1)
    fresh_first = next(row for row in csv.DictReader((tmp_path / "fresh" / "curve.csv").open()))
    assert float(fresh_first["loss"]) != pytest.approx(expected, rel=1e-2), "a fresh start has another loss"
    record = tuned["training"]["init_from"]
    assert record["sha256"] == sha256_of_file(start) and record["dataset"] == "synthetic"
    fitted = {key: tuned["normalisation"][key] for key in ("mean", "std")}
    assert fitted == pytest.approx({key: base["normalisation"][key] for key in fitted}), "the same stack: as it was"
    assert fresh["training"]["init_from"] is None
    validation = [
        row for row in csv.DictReader((tmp_path / "tuned" / "curve.csv").open()) if row["split"] == "validation"
    ]
    assert validation[0]["step"] == "0", "the starting model is scored before the first step"
    tuned_record = tuned["training"]["fine_tuning"]
    assert tuned_record["zero_shot_v_rand"] == pytest.approx(float(validation[0]["v_rand_best"]), abs=1e-12)
    assert fresh["training"]["fine_tuning"] is None

    wider = UNetConfig(levels=3, base_channels=16, dropout=0.0)
    message = r"init_from .*model\.pt: its network \(.*base_channels 8, .*tiles 92\) is not the one trained here \("
    with pytest.raises(PipelineError, match=message + r".*base_channels 16"):
        run(synthetic, tmp_path / "wider", model=wider, init_from=start, iterations=1)
    with pytest.raises(PipelineError, match=r"missing\.pt: model file not found"):
        run(synthetic, tmp_path / "missing", model=model, init_from=tmp_path / "missing.pt", iterations=1)
    assert not (tmp_path / "wider" / "model.pt").exists()


def test_fine_tuning_on_an_inverted_stack_turns_its_contrast_back_unless_told_to_keep_it(synthetic, tmp_path):
    model = UNetConfig(levels=3, base_channels=8, dropout=0.0)
    base = run(synthetic, tmp_path / "base", model=model, iterations=2)
    image, labels = synthetic_sections(np.random.default_rng(0))
    (tmp_path / "inverted").mkdir()
    inverted = prepared(tmp_path / "inverted", 255 - image, labels)
    start = tmp_path / "base" / "model.pt"
    settings = {"model": model, "init_from": start, "iterations": 2}
    fitted = run(inverted, tmp_path / "fitted", **settings)["normalisation"]
    assert fitted["std"] == pytest.approx(-base["normalisation"]["std"], rel=1e-6)
    assert fitted["mean"] == pytest.approx(1 - base["normalisation"]["mean"], rel=1e-6)
    assert fitted["class_means"] == pytest.approx([1 - mean for mean in base["normalisation"]["class_means"]])
    kept = run(inverted, tmp_path / "fitted", init_normalisation="keep", **settings)
    assert kept["normalisation"] == base["normalisation"], "keep: the starting model's"
    assert kept["training"]["options"]["init_normalisation"] == "keep"


def test_two_datasets_train_together_each_normalised_and_validated_as_its_own(synthetic, tmp_path):
    """An inverted copy of the stack beside it: the model records both normalisations (the inverted one's
    mean is 1 - the other's), validation is the mean of each dataset's own, and prediction of each training
    volume uses its dataset's normalisation, of any other volume the reference (first) dataset's."""
    image, labels = synthetic_sections(np.random.default_rng(0))
    (tmp_path / "inverted").mkdir()
    inverted = prepared(tmp_path / "inverted", 255 - image, labels, name="inverted")
    model = UNetConfig(levels=3, base_channels=8, dropout=0.0)
    both = job(synthetic, tmp_path / "both", model=model, iterations=4, validate_every=4, amp="none")
    augmented = [*both.augmented, inverted / "augmented.zarr"]
    with pytest.raises(PipelineError, match="2 augmented sets for 1 volumes"):
        replace(both, augmented=augmented)
    metadata = train(replace(both, augmented=augmented, volume=[*both.volume, inverted / "volume.zarr"]))
    assert metadata["training"]["datasets"] == ["synthetic", "inverted"]
    assert metadata["data"]["augmented_samples"] == [24, 24]
    assert metadata["data"]["voxel_sizes"].keys() == {"synthetic", "inverted"}, "each dataset's pixels, for predict"
    own = {entry["dataset"]: entry for entry in metadata["normalisations"].values()}
    assert own["synthetic"]["mean"] == metadata["normalisation"]["mean"]
    assert own["inverted"]["mean"] == pytest.approx(1 - own["synthetic"]["mean"], abs=1e-9)
    assert own["inverted"]["std"] == pytest.approx(own["synthetic"]["std"], abs=1e-9)

    network, _ = load_model(tmp_path / "both" / "model.pt")
    network.eval()
    scores = []
    for folder, name in ((synthetic, "synthetic"), (inverted, "inverted")):
        predictor = TilePredictor(network, model.geometry, INPUT, own[name], torch.device("cpu"))
        scores.append(validate(predictor, volume_store.open_store(folder / "volume.zarr"), [3])["v_rand"])
    (final,) = [row for row in csv.DictReader((tmp_path / "both" / "curve.csv").open()) if row["split"] == "validation"]
    assert float(final["v_rand"]) == pytest.approx(sum(scores) / 2, abs=1e-12)

    for folder, name in ((synthetic, "synthetic"), (inverted, "inverted")):
        info = predict_volume(tmp_path / "both" / "model.pt", folder / "volume.zarr", tmp_path / f"{name}.zarr")
        assert info["normalisation"]["mode"] == "training dataset" and info["normalisation"]["dataset"] == name
        assert info["normalisation"]["mean"] == own[name]["mean"]
    elsewhere = tmp_path / "plain.zarr"  # the inverted image, but not as a training volume store
    zarr.save_array(str(elsewhere), 255 - image)
    info = predict_volume(tmp_path / "both" / "model.pt", elsewhere, tmp_path / "elsewhere.zarr")
    assert info["normalisation"]["mode"] == "training" and info["normalisation"]["mean"] == own["synthetic"]["mean"]


class _Payload:
    """Unpickling this runs code: what a hostile last.pt in a shared results folder would hold."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_that_would_run_code_is_refused_unrun(synthetic, tmp_path):
    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    marker = tmp_path / "code-ran"
    torch.save({"signature": "x", "step": 1, "payload": _Payload(marker)}, folder / "checkpoints" / "last.pt")
    with pytest.raises(PipelineError, match=r"last\.pt: not a training checkpoint that loads as weights only"):
        run(synthetic, folder, iterations=2)
    assert not marker.exists(), "the checkpoint's code did not run"
    assert not (folder / "model.pt").exists()


def test_a_set_read_from_zarr_trains_the_same_weights_as_one_held_on_the_device(synthetic, tmp_path, monkeypatch):
    run(synthetic, tmp_path / "held", iterations=6, amp="none")
    monkeypatch.setattr(
        "unet_pipeline.training.batches.free_memory", lambda device: 1
    )  # nothing fits: read ahead from Zarr
    run(synthetic, tmp_path / "read", iterations=6, amp="none")
    held, read = (
        torch.load(tmp_path / name / "checkpoints" / "last.pt", weights_only=True) for name in ("held", "read")
    )
    for key, value in held["model"].items():
        assert torch.equal(value, read["model"][key]), key


def test_border_sampling_refuses_weights_that_are_not_finite_naming_the_set(synthetic, tmp_path):
    """A NaN in one sample's weights: the train rule stops before the first step, naming the augmented set and
    the sample, and writes no model."""
    poisoned = tmp_path / "poisoned.zarr"
    shutil.copytree(synthetic / "augmented.zarr", poisoned)
    weights = zarr.open_array(poisoned / "weights", mode="r+")
    weights[1] = np.full(weights.shape[1:], np.nan, weights.dtype)
    with pytest.raises(InputDataError, match=r"poisoned\.zarr: border_sampling: .*first bad sample: 1"):
        run(synthetic, tmp_path / "out", augmented=poisoned, iterations=2, border_sampling=0.5)
    assert not (tmp_path / "out" / "model.pt").exists()
