"""The prediction stage: whole volumes, borders, restarts, bounded memory, submission TIFF."""

import dataclasses
import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import unet_pipeline.stages.predict as predict_module
import zarr
from helpers import REPO, valid_ome_zarr
from ome_zarr_models.v05.image import Image
from unet_pipeline.core.errors import InputDataError, PipelineError
from unet_pipeline.data import volume_store
from unet_pipeline.data.volume_store import decode_probability as decode
from unet_pipeline.inference.overlap_tile import TilePredictor
from unet_pipeline.models.tile_geometry import TileSizeError
from unet_pipeline.models.unet import UNet, UNetConfig, build_model, load_model, save_model
from unet_pipeline.stages.predict import predict_volume, write_submission_tiff

CONFIG = UNetConfig(levels=3, base_channels=4)
NORMALISATION = {"mean": 0.4, "std": 0.3}


@pytest.fixture(autouse=True)
def training_tiles(request, monkeypatch):
    """Tests that compare separate predictions bit for bit predict with the training tile: a measured choice
    could differ between two runs (timing), and another tile changes the output by float rounding. The tests
    of the choice itself are marked ``measured_tiles``."""
    if "measured_tiles" not in request.keywords:
        monkeypatch.setattr(
            predict_module.tile_choice, "choose", lambda predictor, training_size, *args: {"input_size": training_size}
        )


@pytest.fixture(autouse=True)
def without_test_time_augmentation(monkeypatch):
    """These tests check chunks, borders, restarts and shards, which TTA (the schema's default) does not change:
    its 8 views would only multiply their time by 8. They predict without it unless they ask for it, and with
    PyTorch, whose probabilities they compare with the reference's to 1e-5 (ONNX Runtime, the CPU's default,
    is within 1e-4 and its tests ask for it; its export costs a tiny network's whole prediction)."""
    plain = functools.partial(predict_module.PredictionOptions, tta=False, runtime="torch")
    monkeypatch.setattr(predict_module, "PredictionOptions", plain)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    metadata = {
        "model": {
            "architecture": "unet",
            "in_channels": 1,
            "classes": 2,
            "levels": 3,
            "base_channels": 4,
            "padded": False,
            "dropout": 0.5,
        },
        "input_size": 92,
        "normalisation": NORMALISATION,
    }
    save_model(UNet(CONFIG), path, metadata)
    return path


def volume(tmp_path, shape=(3, 150, 170), chunks=None, seed=0):
    data = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    zarr.create_array(str(tmp_path / "image.zarr"), data=data, chunks=chunks or (1, *shape[1:]))
    return tmp_path / "image.zarr", data


def reference(model_path, section):
    model, metadata = load_model(model_path)
    return TilePredictor(model, model.config.geometry, 92, metadata["normalisation"], torch.device("cpu")).section(
        section
    )


@pytest.mark.parametrize("dtype, tolerance", [("uint8", 0.5 / 255 + 1e-6), ("float16", 1e-3)])
def test_volume_prediction_equals_section_prediction(model_path, tmp_path, dtype, tolerance):
    image, data = volume(tmp_path, chunks=(1, 64, 96))  # blocks are smaller than the section
    info = predict_volume(model_path, image, tmp_path / "out.zarr", dtype=dtype, batch_size=3)
    stored = volume_store.open_store(tmp_path / "out.zarr")[volume_store.IMAGE_PATH]
    assert stored.shape == data.shape and stored.dtype == np.dtype(dtype) and stored.chunks == (1, 150, 170)
    for z in range(3):
        assert np.abs(decode(stored[z]) - reference(model_path, data[z])).max() <= tolerance
    assert info["chunks_computed"] == 3 and info["probability_of"].startswith("foreground")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "no work store is left"


def test_mirror_padding_at_all_four_borders(model_path):
    """Predicting a section equals predicting the middle of its mirror-padded copy, which has real context."""
    section = np.random.default_rng(5).integers(0, 256, (100, 120), dtype=np.uint8)
    pad = 64  # a multiple of the pooling period, wider than the context the border tiles read
    padded = np.pad(section, pad, mode="reflect")
    inner = reference(model_path, padded)[pad:-pad, pad:-pad]
    assert np.abs(reference(model_path, section) - inner).max() <= 1e-5


def test_restart_skips_finished_chunks(model_path, tmp_path, monkeypatch):
    image, _ = volume(tmp_path, shape=(4, 80, 80), chunks=(1, 80, 80))
    calls = {"n": 0}
    real = TilePredictor.region

    def crash_after_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(TilePredictor, "region", crash_after_two)
    with pytest.raises(RuntimeError, match="killed"):
        predict_volume(model_path, image, tmp_path / "out.zarr")
    assert not (tmp_path / "out.zarr").exists(), "an interrupted prediction is not an output"
    work = tmp_path / ".out.zarr.partial"
    assert sorted(p.name for p in (work / ".done").glob("*_*_*")) == ["0_0_0", "1_0_0"]
    (work / ".done" / "1_0_0").unlink()  # as if chunk 1 were half-written when the run died
    monkeypatch.setattr(TilePredictor, "region", real)
    info = predict_volume(model_path, image, tmp_path / "out.zarr")
    assert info["chunks_computed"] == 3, "chunk 0 is reused, chunks 1-3 are computed"
    stored = volume_store.open_store(tmp_path / "out.zarr")[volume_store.IMAGE_PATH]
    predict_volume(model_path, image, tmp_path / "clean.zarr")
    np.testing.assert_array_equal(
        stored[:], volume_store.open_store(tmp_path / "clean.zarr")[volume_store.IMAGE_PATH][:]
    )


@pytest.mark.workflow
def test_peak_memory_does_not_grow_with_the_volume(model_path, tmp_path):
    """A lazily filled volume 16x larger costs (almost) no extra memory: no full-volume buffer exists."""
    script = (
        "import json, resource, sys, zarr;"
        "from unet_pipeline.stages.predict import predict_volume;"
        "path, size, out = sys.argv[1], int(sys.argv[2]), sys.argv[3];"
        "zarr.create_array(path, shape=(1, size, size), chunks=(1, 512, 512), dtype='uint8', fill_value=90);"
        f"predict_volume({str(model_path)!r}, path, out, batch_size=8, threads=2, input_size=292, tta=False);"
        "print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))"
    )
    peaks = {}
    for size in (2048, 8192):
        command = [
            sys.executable,
            "-c",
            script,
            str(tmp_path / f"in{size}.zarr"),
            str(size),
            str(tmp_path / f"out{size}.zarr"),
        ]
        peaks[size] = (
            json.loads(subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True).stdout) / 1024
        )
    # the limit is one uint8 copy of the large volume (64 MiB), a quarter of one float32 copy (256 MiB);
    # malloc arenas of the reader and writer threads make the peak vary by about 40 MiB from run to run
    limit_mib = 8192 * 8192 / 2**20
    assert peaks[8192] - peaks[2048] < limit_mib, peaks


@pytest.fixture(scope="module")
def ternausnet_path(tmp_path_factory):
    torch.manual_seed(4)
    config = UNetConfig(architecture="ternausnet", base_channels=4)
    path = tmp_path_factory.mktemp("ternausnet") / "model.pt"
    metadata = {"model": dataclasses.asdict(config), "input_size": 64, "normalisation": NORMALISATION}
    save_model(build_model(config), path, metadata)
    return path


@pytest.mark.parametrize("network", ["unet", "ternausnet"])
def test_several_blocks_per_section_have_no_seams(network, model_path, ternausnet_path, tmp_path, monkeypatch):
    """64-px output blocks (a 3x4 grid per section) give what one block per section gives."""
    path = {"unet": model_path, "ternausnet": ternausnet_path}[network]
    image, _ = volume(tmp_path, shape=(2, 150, 200), seed=7)
    predict_volume(path, image, tmp_path / "whole.zarr", dtype="float16")
    monkeypatch.setattr(predict_module.volume_store, "section_chunks", lambda shape: (1, 64, 64))
    info = predict_volume(path, image, tmp_path / "blocks.zarr", dtype="float16")
    assert info["chunks_computed"] == 2 * 3 * 4
    whole = decode(volume_store.open_store(tmp_path / "whole.zarr")[volume_store.IMAGE_PATH][:])
    blocks = decode(volume_store.open_store(tmp_path / "blocks.zarr")[volume_store.IMAGE_PATH][:])
    assert np.abs(whole - blocks).max() <= 2**-11, "at most one float16 step apart"
    # sections larger than a chunk get a pyramid: 150x200 -> 75x100 -> 38x50 (fits one 64-px chunk)
    root = volume_store.open_store(tmp_path / "blocks.zarr")
    assert [root[level].shape for level in ("1", "2")] == [(2, 75, 100), (2, 38, 50)] and "3" not in root
    assert len(root.attrs["ome"]["multiscales"][0]["datasets"]) == 3
    assert isinstance(valid_ome_zarr(tmp_path / "blocks.zarr"), Image)


def test_larger_tiles_predict_what_the_training_tile_predicts(model_path):
    section = np.random.default_rng(8).integers(0, 256, (130, 170), dtype=np.uint8)
    model, _ = load_model(model_path)
    larger = TilePredictor(model, model.config.geometry, 196, NORMALISATION, torch.device("cpu")).section(section)
    assert np.abs(larger - reference(model_path, section)).max() <= 1e-5


def killed_after_two_chunks(model_path, image, out, monkeypatch) -> None:
    """A prediction of ``image`` into ``out`` that dies on its third chunk, leaving its work store behind."""
    real = TilePredictor.region
    calls = []

    def crash_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(TilePredictor, "region", crash_on_third)
    with pytest.raises(RuntimeError, match="killed"):
        predict_volume(model_path, image, out)
    monkeypatch.setattr(TilePredictor, "region", real)


def test_partial_work_of_another_model_is_discarded(model_path, tmp_path, monkeypatch, caplog):
    image, _ = volume(tmp_path, shape=(3, 60, 60))
    killed_after_two_chunks(model_path, image, tmp_path / "out.zarr", monkeypatch)
    torch.manual_seed(11)
    other = tmp_path / "other.pt"
    save_model(UNet(CONFIG), other, load_model(model_path)[1])  # same architecture, other weights
    with caplog.at_level("INFO"):
        info = predict_volume(other, image, tmp_path / "out.zarr")
    assert "discarding" in caplog.text and info["chunks_computed"] == 3
    predict_volume(other, image, tmp_path / "fresh.zarr")
    stored = volume_store.open_store(tmp_path / "out.zarr")[volume_store.IMAGE_PATH][:]
    np.testing.assert_array_equal(stored, volume_store.open_store(tmp_path / "fresh.zarr")[volume_store.IMAGE_PATH][:])


def test_submission_tiff(model_path, tmp_path):
    image, _ = volume(tmp_path, shape=(2, 60, 70))
    predict_volume(model_path, image, tmp_path / "out.zarr", dtype="float16")
    write_submission_tiff(tmp_path / "out.zarr", tmp_path / "submission.tif")
    pages = tifffile.imread(tmp_path / "submission.tif")
    assert pages.shape == (2, 60, 70) and pages.dtype == np.float32 and 0 <= pages.min() and pages.max() <= 1
    np.testing.assert_array_equal(
        pages, decode(volume_store.open_store(tmp_path / "out.zarr")[volume_store.IMAGE_PATH][:])
    )


def test_clear_errors(model_path, tmp_path):
    zarr.create_array(str(tmp_path / "float.zarr"), data=np.zeros((2, 40, 40), np.float32))
    with pytest.raises(InputDataError, match=r"float\.zarr: expected uint8 gray values, found dtype float32"):
        predict_volume(model_path, tmp_path / "float.zarr", tmp_path / "o.zarr")
    zarr.create_array(str(tmp_path / "4d.zarr"), data=np.zeros((2, 2, 40, 40), np.uint8))
    with pytest.raises(InputDataError, match=r"4d\.zarr: expected a 2D or 3D image"):
        predict_volume(model_path, tmp_path / "4d.zarr", tmp_path / "o.zarr")
    image, _ = volume(tmp_path, shape=(1, 40, 40))
    with pytest.raises(PipelineError, match=r"missing\.pt: model file not found"):
        predict_volume(tmp_path / "missing.pt", image, tmp_path / "o.zarr")
    with pytest.raises(TileSizeError, match="input tile size 90 is illegal.*88 or 92"):
        predict_volume(model_path, image, tmp_path / "o.zarr", input_size=90)
    assert not (tmp_path / "o.zarr").exists()


def test_two_dimensional_input(model_path, tmp_path):
    data = np.random.default_rng(2).integers(0, 256, (70, 90), dtype=np.uint8)
    zarr.create_array(str(tmp_path / "plane.zarr"), data=data)
    predict_volume(model_path, tmp_path / "plane.zarr", tmp_path / "o.zarr", dtype="float16")
    stored = volume_store.open_store(tmp_path / "o.zarr")[volume_store.IMAGE_PATH]
    assert stored.shape == (1, 70, 90)
    assert np.abs(decode(stored[0]) - reference(model_path, data)).max() <= 1e-3


def test_provenance_of_the_input_is_recorded_or_its_absence_logged(model_path, tmp_path, caplog):
    from unet_pipeline.stages.ingest import ingest

    image, data = volume(tmp_path, shape=(2, 40, 40))
    with caplog.at_level("WARNING"):
        info = predict_volume(model_path, image, tmp_path / "plain.zarr")
    assert "image.zarr is not an ingested volume store" in caplog.text and "input_pixel_sha256" not in info
    axes = volume_store.open_store(tmp_path / "plain.zarr").attrs["ome"]["multiscales"][0]["axes"]
    assert all("unit" not in axis for axis in axes)
    tifffile.imwrite(tmp_path / "stack.tif", data, photometric="minisblack")
    attrs = ingest(
        "s",
        {"image": {"source": "s"}, "voxel_size": [40.0, 5.0, 5.0]},
        tmp_path / "stack.tif",
        None,
        tmp_path / "v.zarr",
    )
    info = predict_volume(model_path, tmp_path / "v.zarr", tmp_path / "ingested.zarr")
    assert info["input_pixel_sha256"] == attrs["image"]["pixel_sha256"]
    dataset = volume_store.open_store(tmp_path / "ingested.zarr").attrs["ome"]["multiscales"][0]
    assert dataset["datasets"][0]["coordinateTransformations"][0]["scale"] == [40.0, 5.0, 5.0]
    assert {axis["unit"] for axis in dataset["axes"]} == {"nanometer"}


def test_a_volume_of_another_pixel_size_is_named_in_the_log_and_the_provenance(model_path, tmp_path, caplog):
    from unet_pipeline.stages.ingest import ingest

    model, metadata = load_model(model_path)
    trained_at = {"voxel_sizes": {"isbi": {"voxel_size": [50.0, 4.0, 4.0], "unit": "nanometer"}}}
    save_model(model, tmp_path / "model.pt", metadata | {"data": trained_at})
    _, data = volume(tmp_path, shape=(1, 40, 40))
    tifffile.imwrite(tmp_path / "stack.tif", data, photometric="minisblack")
    warned = []
    for name, voxel_size, unit in (("near", [30, 0.0048, 0.0048], "micrometer"), ("far", [30, 10, 10], "nanometer")):
        spec = {"image": {"source": "s"}, "voxel_size": voxel_size, "unit": unit}
        ingest(name, spec, tmp_path / "stack.tif", None, tmp_path / f"{name}.zarr")
        caplog.clear()
        with caplog.at_level("WARNING"):
            info = predict_volume(tmp_path / "model.pt", tmp_path / f"{name}.zarr", tmp_path / f"{name}-p.zarr")
        warned.append("times those the model was trained on" in caplog.text)
        assert info["pixel_size"]["training_nm"] == {"isbi": [4.0, 4.0]}
    assert info["pixel_size"] == {
        "volume_nm": [10.0, 10.0],
        "training_nm": {"isbi": [4.0, 4.0]},
        "ratio": [2.5, 2.5],
        "matches": False,
    }
    assert warned == [False, True], "4.8 nm is within 1.25x of 4 nm, 10 nm is not"
    assert "far.zarr: pixels of [10.0, 10.0] nm (y, x), [2.5, 2.5] times" in caplog.text


def test_pixel_size_check_needs_both_sides():
    check = predict_module.pixel_size_check
    trained = {"data": {"voxel_sizes": {"a": {"voxel_size": [1, 4, 4], "unit": "nanometer"}}}}
    volume_info = {"voxel_size": [1, 2, 2], "unit": "nanometer"}
    assert check(trained, volume_info)["ratio"] == [0.5, 0.5]
    assert check({}, volume_info) is None, "a model from before the pixel sizes were recorded"
    assert check(trained, {"voxel_size": None, "unit": None}) is None, "a volume without a voxel size"
    assert check(trained, {"voxel_size": [1, 2, 2], "unit": "parsec"}) is None, "a unit it cannot convert"
    assert check(trained, None) is None, "an input that is not a volume store"
    both = {"data": {"voxel_sizes": {"a": trained["data"]["voxel_sizes"]["a"], "b": volume_info}}}
    assert check(both, volume_info)["matches"], "the closest of several training datasets decides"


def test_sharded_prediction_equals_one_job_bit_for_bit(model_path, tmp_path, monkeypatch):
    """Setup, 4 shard jobs in any order and the finishing job write exactly what one job writes."""
    monkeypatch.setattr(predict_module.volume_store, "section_chunks", lambda shape: (1, 64, 64))
    image, _ = volume(tmp_path, shape=(3, 150, 200), seed=11)
    whole = predict_volume(model_path, image, tmp_path / "whole.zarr")
    out = tmp_path / "sharded.zarr"
    predict_module.prepare_prediction(model_path, image, out)
    computed = [predict_module.predict_shard(model_path, image, out, shard, 4) for shard in (2, 0, 3, 1)]
    assert sum(computed) == whole["chunks_computed"] == 36 and min(computed) > 0
    info = predict_module.finish_prediction(model_path, image, out)
    assert info["shards"] == 4 and info["chunks_computed"] == 36
    one, four = volume_store.open_store(tmp_path / "whole.zarr"), volume_store.open_store(out)
    for level in ("0", "1", "2"):
        np.testing.assert_array_equal(four[level][:], one[level][:])


def test_a_killed_shard_reruns_only_its_unfinished_chunks(model_path, tmp_path, monkeypatch):
    monkeypatch.setattr(predict_module.volume_store, "section_chunks", lambda shape: (1, 64, 64))
    image, _ = volume(tmp_path, shape=(2, 150, 200), seed=12)
    out = tmp_path / "p.zarr"
    predict_module.prepare_prediction(model_path, image, out)
    assert predict_module.predict_shard(model_path, image, out, 0, 2) == 12
    original, writes = predict_module.WorkStore.store, []

    def dying(self, block, probability, dtype):
        if len(writes) == 5:
            raise KeyboardInterrupt("killed")
        writes.append(block)
        original(self, block, probability, dtype)

    monkeypatch.setattr(predict_module.WorkStore, "store", dying)
    with pytest.raises(KeyboardInterrupt):
        predict_module.predict_shard(model_path, image, out, 1, 2)
    monkeypatch.setattr(predict_module.WorkStore, "store", original)
    with pytest.raises(PipelineError, match=r"7 chunks are not predicted yet"):
        predict_module.finish_prediction(model_path, image, out)
    assert predict_module.predict_shard(model_path, image, out, 1, 2) == 12 - 5, "only the unfinished chunks"
    predict_module.finish_prediction(model_path, image, out)
    predict_volume(model_path, image, tmp_path / "whole.zarr")
    np.testing.assert_array_equal(
        volume_store.open_store(out)["0"][:], volume_store.open_store(tmp_path / "whole.zarr")["0"][:]
    )


def test_shard_jobs_need_their_setup_and_a_valid_index(model_path, tmp_path):
    image, _ = volume(tmp_path)
    with pytest.raises(PipelineError, match=r"no work store to predict into"):
        predict_module.predict_shard(model_path, image, tmp_path / "p.zarr", 0, 2)
    predict_module.prepare_prediction(model_path, image, tmp_path / "p.zarr")
    with pytest.raises(PipelineError, match=r"shard 2 does not exist: shards are 0 to 1"):
        predict_module.predict_shard(model_path, image, tmp_path / "p.zarr", 2, 2)


def test_per_volume_normalisation_undoes_a_contrast_change(model_path, tmp_path):
    """A darker, flatter copy predicted with normalisation: volume gives what the original gives with training's."""
    from unet_pipeline.transforms.normalisation import histogram, percentiles

    rng = np.random.default_rng(11)
    original = rng.normal(130, 35, (2, 90, 100)).clip(0, 255).astype(np.uint8)
    flat = (30 + 0.5 * original.astype(np.float64)).round().astype(np.uint8)
    saved = torch.load(model_path, weights_only=True)
    robust = percentiles(histogram(original))
    saved["metadata"]["normalisation"] = NORMALISATION | {"percentiles": robust}
    model = tmp_path / "model.pt"
    torch.save(saved, model)
    for name, data in (("original", original), ("flat", flat)):
        zarr.create_array(str(tmp_path / f"{name}.zarr"), data=data)
    predict_volume(model, tmp_path / "original.zarr", tmp_path / "reference.zarr", dtype="float16")
    results = {}
    for mode in ("training", "volume"):
        info = predict_volume(
            model, tmp_path / "flat.zarr", tmp_path / f"{mode}.zarr", dtype="float16", normalisation=mode
        )
        assert info["normalisation"]["mode"] == mode
        results[mode] = volume_store.open_store(tmp_path / f"{mode}.zarr")[volume_store.IMAGE_PATH][:].astype(float)
    assert info["normalisation"]["volume_percentiles"] == percentiles(histogram(flat))
    expected = volume_store.open_store(tmp_path / "reference.zarr")[volume_store.IMAGE_PATH][:].astype(float)
    error = {mode: np.abs(result - expected).mean() for mode, result in results.items()}
    assert error["volume"] < 0.01 and error["volume"] < error["training"] / 3, error
    with pytest.raises(PipelineError, match="normalisation must be one of"):
        predict_volume(model, tmp_path / "flat.zarr", tmp_path / "bad.zarr", normalisation="zscore")
    with pytest.raises(PipelineError, match="records no gray-value percentiles"):
        predict_volume(model_path, tmp_path / "flat.zarr", tmp_path / "old.zarr", normalisation="volume")
    assert not (tmp_path / "bad.zarr").exists() and not (tmp_path / "old.zarr").exists()


@pytest.mark.measured_tiles
def test_the_tile_is_measured_once_per_prediction_and_changes_nothing(model_path, tmp_path, monkeypatch):
    from unet_pipeline.inference import tile_choice

    image, _ = volume(tmp_path, shape=(2, 256, 256), seed=13)
    chunk = (256, 256)
    assert tile_choice.candidates(CONFIG.geometry, 92, chunk) == [92, 104, 168, 296]
    assert tile_choice.candidates(UNetConfig(architecture="ternausnet").geometry, 64, chunk) == [64], "padded: fixed"
    calls = []
    real = tile_choice.choose
    monkeypatch.setattr(tile_choice, "choose", lambda *args: calls.append(args) or real(*args))
    out = tmp_path / "auto.zarr"
    predict_module.prepare_prediction(model_path, image, out, predict_module.PredictionOptions(dtype="float16"))
    for shard in (0, 1):
        predict_module.predict_shard(
            model_path, image, out, shard, 2, predict_module.PredictionOptions(dtype="float16")
        )
    info = predict_module.finish_prediction(model_path, image, out, predict_module.PredictionOptions(dtype="float16"))
    assert len(calls) == 1, "chosen by the job that created the work store, read by the shard jobs"
    assert info["input_size"] in tile_choice.candidates(CONFIG.geometry, 92, chunk)
    training = predict_volume(model_path, image, tmp_path / "training.zarr", dtype="float16", input_size=92)
    assert training["input_size"] == 92 and len(calls) == 1, "a configured tile is not measured"
    auto = volume_store.open_store(out)[volume_store.IMAGE_PATH][:].astype(np.float32)
    fixed = volume_store.open_store(tmp_path / "training.zarr")[volume_store.IMAGE_PATH][:].astype(np.float32)
    assert np.abs(auto - fixed).max() <= 1e-3, "float16 storage: the same probabilities to its resolution"

    model, _ = load_model(model_path)
    predictor = TilePredictor(model, model.config.geometry, 92, NORMALISATION, torch.device("cpu"), batch_size=2)
    section = zarr.open_array(str(image))[0]
    for size in (104, 168, 296):  # every candidate predicts what the training tile predicts, to 1e-5
        other = dataclasses.replace(predictor, input_size=size).section(section)
        assert np.abs(other - predictor.section(section)).max() <= 1e-5, size
    starved = real(predictor, 92, chunk, memory_mb=1)  # a budget below any tile: the training tile
    assert starved["input_size"] == 92 and len(starved["measured"]) == 1


def test_a_kill_while_markers_are_removed_leaves_a_prediction_a_rerun_finishes(model_path, tmp_path, monkeypatch):
    image, _ = volume(tmp_path, shape=(3, 60, 60))
    real = predict_module.shutil.rmtree

    def killed_in_marker_removal(path, *args, **kwargs):
        if ".done" in str(path):
            next(Path(path).iterdir()).unlink()  # part of the markers are gone when the job is killed
            raise SystemExit("killed by the scheduler")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(predict_module.shutil, "rmtree", killed_in_marker_removal)
    with pytest.raises(SystemExit):
        predict_volume(model_path, image, tmp_path / "out.zarr")
    monkeypatch.setattr(predict_module.shutil, "rmtree", real)
    real(tmp_path / "out.zarr", ignore_errors=True)  # Snakemake deletes a failed job's output
    info = predict_volume(model_path, image, tmp_path / "out.zarr")
    assert info["chunks_computed"] == 3
    predict_volume(model_path, image, tmp_path / "fresh.zarr")
    stored = volume_store.open_store(tmp_path / "out.zarr")[volume_store.IMAGE_PATH][:]
    np.testing.assert_array_equal(stored, volume_store.open_store(tmp_path / "fresh.zarr")[volume_store.IMAGE_PATH][:])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "no markers are left behind"


def test_a_work_store_that_cannot_be_read_is_kept_not_discarded(model_path, tmp_path, monkeypatch):
    image, _ = volume(tmp_path, shape=(3, 60, 60))
    killed_after_two_chunks(model_path, image, tmp_path / "out.zarr", monkeypatch)
    work = tmp_path / ".out.zarr.partial"
    read_text = Path.read_text

    def file_system_hiccup(path, *args, **kwargs):
        if path == work / "zarr.json":
            raise OSError(5, "Input/output error")
        return read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", file_system_hiccup)
    with pytest.raises(PipelineError, match=r"cannot read the work store's metadata .*it is kept, retry"):
        predict_volume(model_path, image, tmp_path / "out.zarr")
    assert sorted(p.name for p in (work / ".done").glob("*_*_*")) == ["0_0_0", "1_0_0"], "the finished chunks are kept"
    monkeypatch.setattr(Path, "read_text", read_text)
    assert predict_volume(model_path, image, tmp_path / "out.zarr")["chunks_computed"] == 1


def test_a_second_writer_of_a_shard_is_refused(model_path, tmp_path, monkeypatch):
    """An old cluster job still writing (Snakemake restarted meanwhile) holds the shard's lock: a new job stops."""
    image, _ = volume(tmp_path, shape=(3, 60, 60))
    real = TilePredictor.region

    def crash(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(TilePredictor, "region", crash)
    with pytest.raises(RuntimeError, match="killed"):
        predict_volume(model_path, image, tmp_path / "out.zarr")
    monkeypatch.setattr(TilePredictor, "region", real)
    lock = tmp_path / ".out.zarr.partial" / ".done" / "shard-0.lock"
    holder = (
        "import fcntl, sys, time\n"
        f"handle = open({str(lock)!r}, 'a+'); fcntl.lockf(handle, fcntl.LOCK_EX)\n"
        "handle.seek(0); handle.truncate(); handle.write('SLURM job 4242'); handle.flush()\n"
        "print('held', flush=True); time.sleep(60)\n"
    )
    with subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True) as other:
        try:
            assert other.stdout.readline().strip() == "held"
            with pytest.raises(PipelineError, match=r"shard 0 is being written by SLURM job 4242; wait for it"):
                predict_volume(model_path, image, tmp_path / "out.zarr")
        finally:
            other.kill()
    assert predict_volume(model_path, image, tmp_path / "out.zarr")["chunks_computed"] == 3, "a dead holder's lock"


def test_the_device_path_through_the_stage_stores_what_the_host_path_stores(model_path, tmp_path, monkeypatch):
    """Tiles cut, turned and stitched on the device (CUDA's path, forced here on the CPU), copied back by the
    writer thread: the stored prediction is the host path's, TTA included."""
    image, _ = volume(tmp_path, chunks=(1, 64, 96))
    host = predict_volume(model_path, image, tmp_path / "host.zarr", dtype="float16", tta=True)
    monkeypatch.setattr(predict_module, "TilePredictor", functools.partial(TilePredictor, on_device=True))
    device = predict_volume(model_path, image, tmp_path / "device.zarr", dtype="float16", tta=True)
    stored = [
        volume_store.open_store(tmp_path / name)[volume_store.IMAGE_PATH][:] for name in ("host.zarr", "device.zarr")
    ]
    assert device["chunks_computed"] == host["chunks_computed"] == 3
    np.testing.assert_allclose(decode(stored[1]), decode(stored[0]), atol=1e-3, rtol=0)


def test_auto_follows_the_tta_choice_the_model_records(model_path, tmp_path):
    """``tta: auto`` (the schema's default) predicts as the model's validation chose; the output and the
    prediction's signature record what ran, not "auto"."""
    model, metadata = load_model(model_path)
    for chosen in (False, True):
        path = tmp_path / f"chose_{chosen}.pt"
        save_model(model, path, metadata | {"training": {"tta": {"chosen": chosen}}})
        (tmp_path / str(chosen)).mkdir()
        image, _ = volume(tmp_path / str(chosen), shape=(1, 100, 100))
        info = predict_volume(path, image, tmp_path / f"out_{chosen}.zarr", tta="auto")
        assert info["tta"] is chosen
        stored = volume_store.open_store(tmp_path / f"out_{chosen}.zarr")
        assert volume_store.provenance(stored)["tta"] is chosen
    with_tta = decode(volume_store.open_store(tmp_path / "out_True.zarr")[volume_store.IMAGE_PATH][0])
    without = decode(volume_store.open_store(tmp_path / "out_False.zarr")[volume_store.IMAGE_PATH][0])
    assert np.abs(with_tta - without).max() > 1e-3, "the two choices predicted differently"


def test_onnx_runtime_predicts_what_pytorch_predicts(model_path, tmp_path):
    """The CPU's default runtime: the probabilities PyTorch gives to 1e-4 (stored as float16: 1e-3), and the
    output says which runtime ran."""
    image, _ = volume(tmp_path, chunks=(1, 64, 96))
    options = {"dtype": "float16", "runtime": "onnxruntime", "tta": True}
    info = predict_volume(model_path, image, tmp_path / "onnx.zarr", **options)
    assert info["runtime"] == "onnxruntime" and info["tta"] is True
    torch_info = predict_volume(model_path, image, tmp_path / "torch.zarr", **options | {"runtime": "torch"})
    assert torch_info["runtime"] == "torch"
    onnx, pytorch = (
        volume_store.open_store(tmp_path / name)[volume_store.IMAGE_PATH] for name in ("onnx.zarr", "torch.zarr")
    )
    assert np.abs(decode(onnx[:]) - decode(pytorch[:])).max() <= 1e-3


def test_the_runtime_is_resolved_per_device_and_checked(model_path, tmp_path, monkeypatch):
    from unet_pipeline.inference.onnx_network import resolved_runtime
    from unet_pipeline.models import onnx_export

    assert resolved_runtime("auto", torch.device("cpu")) == "onnxruntime"
    assert resolved_runtime("auto", torch.device("cuda")) == "torch"
    with pytest.raises(PipelineError, match="onnxruntime runs on the CPU, not on cuda"):
        resolved_runtime("onnxruntime", torch.device("cuda"))
    with pytest.raises(PipelineError, match="runtime must be one of auto, torch, onnxruntime, not 'tvm'"):
        resolved_runtime("tvm", torch.device("cpu"))
    image, _ = volume(tmp_path, shape=(1, 60, 60))
    monkeypatch.setattr(onnx_export, "TOLERANCE", -1.0)  # any difference is too large: the check must refuse
    with pytest.raises(PipelineError, match=r"model\.pt: ONNX differs from PyTorch"):
        predict_volume(model_path, image, tmp_path / "out.zarr", runtime="onnxruntime")
    assert not (tmp_path / "out.zarr").exists()


def test_a_prediction_is_continued_only_by_the_runtime_that_began_it(model_path, tmp_path):
    image, _ = volume(tmp_path, shape=(1, 60, 60))
    image3d = predict_module.open_image(image)
    metadata = load_model(model_path)[1]
    signatures = {
        runtime: predict_module.prediction_signature(
            model_path, image3d, metadata, predict_module.PredictionOptions(runtime=runtime)
        )
        for runtime in ("torch", "onnxruntime")
    }
    assert signatures["torch"] != signatures["onnxruntime"]
