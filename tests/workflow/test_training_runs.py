"""Training set-ups beyond one preset on one dataset, run through the workflow: data-parallel ranks, fine-tuning
from another model, several datasets at once (the transfer preset).

Apart from tests/workflow/test_presets.py so that the two files' runs share CI's two workers.
"""

import copy
import json
import shutil

import pytest
import tifffile
import torch
from helpers import REPO, run_snakemake, shipped_config, shrunk, tiny_config, write_config
from unet_pipeline.core.checksums import sha256_of_file
from unet_pipeline.data import volume_store
from unet_pipeline.transforms.augmentation import TRANSFER

pytestmark = pytest.mark.workflow

SHIPPED = shipped_config()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_isbi):
    return tmp_path_factory.mktemp("training_runs")


def test_a_preset_with_two_gpus_trains_data_parallel_through_the_workflow(workdir, tiny_isbi):
    """gpus: 2 starts two ranks with torchrun inside the train rule (gloo on this CPU-only machine)."""
    config = tiny_config(tiny_isbi.as_uri())
    preset = shrunk(SHIPPED["presets"]["laptop"]) | {"gpus": 2}
    preset["training"].update(batch_size=2, iterations=4, validate_every=2)
    config["preset"], config["presets"] = "laptop_2gpus", {"laptop_2gpus": preset}
    write_config(workdir / "two_gpus.yaml", config)
    target = "results/tiny/models/laptop_2gpus/model.json"
    run_snakemake(workdir, target, "--configfile", "two_gpus.yaml")
    metadata = json.loads((workdir / target).read_text())
    assert metadata["training"]["processes"] == 2 and metadata["training"]["iterations"] == 4
    log = (workdir / "results" / "logs" / "train" / "tiny.laptop_2gpus.log").read_text()
    assert "starting 2 training processes" in log and "rank 0: INFO" in log, log
    checkpoint = torch.load(workdir / "results/tiny/models/laptop_2gpus/checkpoints/last.pt", weights_only=False)
    assert len(checkpoint["rng"]) == 2, "rank 0 wrote the random states of both ranks"


def test_a_fine_tuning_preset_starts_from_the_model_of_another(workdir, tiny_isbi, monkeypatch):
    """README's fine-tuning preset, shrunk: snakemake trains the model it names (the transfer preset) first, then
    fine-tunes from it with the input normalisation fitted to the new stack. The preset is read as
    benchmarks/fine_tuning.py reads it for its "brief" recipe, so README's figures are of this preset."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from shipped_workflow import readme_fine_tuning_preset

    config = tiny_config(tiny_isbi.as_uri())
    base = shrunk(SHIPPED["presets"]["transfer"])
    readme = readme_fine_tuning_preset()
    assert (
        base["model"] | readme["model"] == base["model"]
        and readme["init_from"] == "results/isbi2012/models/transfer/model.pt"
    )
    tuned = shrunk(readme | {"train_dataset": "tiny", "init_from": "results/tiny/models/base/model.pt"})
    tuned["input_size"], tuned["training"]["iterations"], tuned["training"]["warmup"] = base["input_size"], 3, 2
    config["preset"], config["presets"] = "base", {"base": base, "tuned": tuned}
    write_config(workdir / "tuned.yaml", config)
    result = run_snakemake(workdir, "results/tiny/models/tuned/model.json", "--configfile", "tuned.yaml")
    assert "rule train:" in result.stdout + result.stderr
    metadata = json.loads((workdir / "results/tiny/models/tuned/model.json").read_text())
    start = metadata["training"]["init_from"]
    assert start["sha256"] == sha256_of_file(workdir / "results/tiny/models/base/model.pt")
    assert start["preset"] == "base" and metadata["training"]["iterations"] == 3
    assert metadata["training"]["options"]["init_normalisation"] == "fit"  # the schema's default, as README says
    base_metadata = json.loads((workdir / "results/tiny/models/base/model.json").read_text())
    for key in ("mean", "std"):  # the same stack: fitting its class means onto the base's changes nothing
        assert metadata["normalisation"][key] == pytest.approx(base_metadata["normalisation"][key], rel=1e-6)

    wrong = copy.deepcopy(config)
    wrong["presets"]["tuned"]["model"]["base_channels"] = 8
    write_config(workdir / "wrong.yaml", wrong)
    failed = run_snakemake(workdir, "results/tiny/models/tuned/model.json", "--configfile", "wrong.yaml", check=False)
    assert failed.returncode != 0 and "is not the one trained here" in failed.stdout + failed.stderr


def test_the_transfer_preset_trains_on_two_datasets_at_once(workdir, tiny_isbi):
    """The transfer preset, shrunk, with train_dataset [tiny, other] (other: tiny's training stack with inverted
    gray values) and every augmentation for transfer on: each dataset augmented with the preset's own
    augmentations, one model under results/tiny+other/, which predicts each training dataset with that dataset's
    normalisation."""
    other = workdir / "other_data"
    other.mkdir(exist_ok=True)
    tifffile.imwrite(
        other / "image.tif", 255 - tifffile.imread(tiny_isbi / "train-volume.tif"), photometric="minisblack"
    )
    shutil.copy(tiny_isbi / "train-labels.tif", other / "labels.tif")
    config = tiny_config(tiny_isbi.as_uri())
    config["datasets"]["other"] = copy.deepcopy(config["datasets"]["tiny"]) | {
        "base": other.as_uri(),
        "image": {"source": "image.tif"},
        "voxel_size": [50.0, 8.0, 8.0],  # another pixel size: prediction compares with the closest dataset's
    }
    config["datasets"]["other"]["labels"]["source"] = "labels.tif"
    preset = shrunk(SHIPPED["presets"]["transfer"]) | {"train_dataset": ["tiny", "other"]}
    assert preset["augmentation"]["scale"]["enabled"], "the shipped transfer preset zooms"
    # noise, blur and low resolution are options of a preset's augmentation: run them through the workflow too
    preset["augmentation"] |= {name: {"enabled": True} for name in TRANSFER}
    preset["training"]["border_sampling"] = 0.5  # the joined sets' weights decide the draws
    config["preset"], config["presets"] = "transfer", {"transfer": preset}
    write_config(workdir / "two_datasets.yaml", config)
    model = "results/tiny+other/models/transfer/model.json"
    run_snakemake(workdir, model, "results/other/evaluation/transfer/summary.json", "--configfile", "two_datasets.yaml")

    results = workdir / "results"
    for dataset in ("tiny", "other"):
        augmented = volume_store.open_store(results / dataset / "augmented" / "transfer.zarr")
        settings = volume_store.provenance(augmented)["augmentation"]
        assert all(settings[name]["enabled"] for name in TRANSFER), settings
    metadata = json.loads((workdir / model).read_text())
    assert metadata["training"]["datasets"] == ["tiny", "other"]
    own = {entry["dataset"]: entry for entry in metadata["normalisations"].values()}
    assert own["other"]["mean"] == pytest.approx(1 - own["tiny"]["mean"], abs=1e-9)
    log = (results / "logs" / "train" / "tiny+other.transfer.log").read_text()
    assert "validation per dataset" in log and "border sampling 0.50: a sample's chance" in log, log
    assert metadata["training"]["options"]["border_sampling"] == 0.5
    prediction = volume_store.open_store(results / "other" / "predictions" / "transfer.zarr")
    used = volume_store.provenance(prediction)["normalisation"]
    assert used["dataset"] == "other" and used["mean"] == own["other"]["mean"]
    pixels = volume_store.provenance(prediction)["pixel_size"]
    assert pixels == {"volume_nm": [8.0, 8.0], "training_nm": {"tiny": [4.0, 4.0], "other": [8.0, 8.0]}} | {
        "ratio": [1.0, 1.0],
        "matches": True,
    }
    assert (
        "times those the model was trained on" not in (results / "logs" / "predict" / "other.transfer.log").read_text()
    )
