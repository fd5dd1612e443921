"""Every preset of the shipped config runs through the workflow: augment, train, predict, evaluate.

The presets are read from config/config.yaml, so a preset added there is covered
without editing this file. Each is shrunk for CI only where that keeps its
network: few samples and iterations, and the smallest legal tile whose output
covers 64 px. A preset whose encoder starts from a named pretrained file fetches
it through the download stage from a loopback server.
"""

import json

import pytest
import test_training_runs  # beside this file: where the transfer preset runs
import torch
from helpers import run_snakemake, shipped_config, shrunk, tiny_config, write_config
from unet_pipeline.core.checksums import sha256_of_file
from unet_pipeline.data import volume_store
from unet_pipeline.models.unet import load_model
from unet_pipeline.transforms.augmentation import TRANSFER

pytestmark = pytest.mark.workflow

SHIPPED = shipped_config()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_isbi):
    return tmp_path_factory.mktemp("presets")


@pytest.fixture
def weights_server(serve, tmp_path):
    """A loopback server with a VGG11-shaped state dict named as torchvision names its files."""
    from helpers import vgg11_state_dict

    folder = tmp_path / "weights"
    folder.mkdir()
    staged = folder / "staged.pth"
    torch.save(vgg11_state_dict(seed=3), staged)
    name = f"vgg11-{sha256_of_file(staged)[:8]}.pth"
    staged.rename(folder / name)
    base, requests = serve(folder)
    return f"{base}/{name}", folder / name, requests


def targets_of(name: str) -> list[str]:
    """Every output (the default targets), but for a preset whose network an earlier one (by name) has: its model,
    predictions and evaluation, since its export, segmentation and figures are that preset's (they do not depend on
    the training settings, which are all that differs)."""
    model = SHIPPED["presets"][name]["model"]
    if not any(SHIPPED["presets"][other]["model"] == model for other in sorted(SHIPPED["presets"]) if other < name):
        return []
    return [f"results/tiny/evaluation/{name}/summary.json", f"results/tiny_test/predictions/{name}.zarr"]


def test_only_a_network_shipped_twice_skips_the_later_export():
    assert [name for name in sorted(SHIPPED["presets"]) if targets_of(name)] == ["paper_fast", "transfer"]


# presets that a test below runs through the workflow in a setting of their own
ELSEWHERE = {"transfer": test_training_runs.test_the_transfer_preset_trains_on_two_datasets_at_once}


def test_every_shipped_preset_runs_through_the_workflow_somewhere():
    assert set(ELSEWHERE) <= set(SHIPPED["presets"])


@pytest.mark.parametrize("name", sorted(set(SHIPPED["presets"]) - set(ELSEWHERE)))
def test_shipped_preset_runs_through_the_workflow(name, workdir, tiny_isbi, weights_server):
    url, weights_file, requests = weights_server
    config = tiny_config(tiny_isbi.as_uri())
    config["preset"] = name
    config["presets"] = {name: shrunk(SHIPPED["presets"][name])}
    config["pretrained_weights"] = {key: url for key in SHIPPED["pretrained_weights"]}
    if name == SHIPPED["preset"]:  # the default run predicts as shipped (the tiny config: no TTA, PyTorch)
        config["prediction"] |= {key: SHIPPED["prediction"][key] for key in ("tta", "runtime")}
    write_config(workdir / f"{name}.yaml", config)
    run_snakemake(workdir, *targets_of(name), "--configfile", f"{name}.yaml")

    results = workdir / "results"
    model, metadata = load_model(results / "tiny" / "models" / name / "model.pt")
    shipped_model = SHIPPED["presets"][name]["model"]
    assert metadata["model"]["architecture"] == shipped_model["architecture"]
    assert metadata["input_size"] == config["presets"][name]["input_size"]
    assert metadata["training"]["iterations"] == 2
    for dataset in ("tiny", "tiny_test"):
        prediction = volume_store.open_store(results / dataset / "predictions" / f"{name}.zarr")[
            volume_store.IMAGE_PATH
        ]
        assert prediction.shape == (3, 128, 128)
    augmented = volume_store.provenance(volume_store.open_store(results / "tiny" / "augmented" / f"{name}.zarr"))
    for transfer in TRANSFER:  # off in the top-level augmentation, which these presets use
        assert augmented["augmentation"][transfer]["enabled"] is False
    summary = json.loads((results / "tiny" / "evaluation" / name / "summary.json").read_text())
    assert 0.0 <= summary["metrics"]["v_rand"]["value"] <= 1.0
    tta = config["prediction"]["tta"]  # auto (shipped): what the model chose on its validation sections
    assert summary["tta"] is (metadata["training"]["tta"]["chosen"] if tta == "auto" else tta)
    runtime = "onnxruntime" if name == SHIPPED["preset"] else "torch"  # auto on the CPU: ONNX Runtime
    predicted = volume_store.open_store(results / "tiny" / "predictions" / f"{name}.zarr")
    assert volume_store.provenance(predicted)["runtime"] == runtime

    if shipped_model.get("encoder_weights") in SHIPPED["pretrained_weights"]:
        downloaded = results / "downloads" / "weights" / weights_file.name
        assert sha256_of_file(downloaded) == sha256_of_file(weights_file)
        assert [path for path, _ in requests] == [f"/{weights_file.name}"]
        assert metadata["model"]["encoder_weights"] == str(downloaded.relative_to(workdir))
        assert metadata["data"]["encoder_weights_sha256"] == sha256_of_file(weights_file)
        training = SHIPPED["presets"][name]["training"]
        if training["optimizer"] == "adam":  # an Adam step moves a weight by at most about one learning rate
            state = torch.load(weights_file, weights_only=True)
            difference = (model.encoder[1][0].weight - state["features.3.weight"]).abs().max().item()
            assert difference <= 2.5 * training["learning_rate"], difference
