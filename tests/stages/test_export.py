"""ONNX and BioImage.IO export of a trained model, checked with onnxruntime and bioimageio.core."""

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from unet_pipeline.core.errors import PipelineError
from unet_pipeline.models import onnx_export
from unet_pipeline.models.unet import UNet, UNetConfig, load_model, save_model
from unet_pipeline.stages import export
from unet_pipeline.stages.export import Packaged, export_model, export_onnx, tile_sizes
from unet_pipeline.stages.ingest import ingest


@pytest.fixture(scope="module")
def trained(tiny_isbi, tmp_path_factory):
    """A small random U-Net saved as the train stage saves it, and the volume store it was 'trained' on."""
    folder = tmp_path_factory.mktemp("export")
    config = UNetConfig(levels=3, base_channels=4)
    torch.manual_seed(0)
    metadata = {
        "model": {"architecture": "unet", "in_channels": 1, "classes": 2, "levels": 3, "base_channels": 4},
        "input_size": 108,
        "normalisation": {"mean": 0.5, "std": 0.2},
        "training": {"iterations": 0},
        "data": {"source": {"dataset": "isbi2012 crops"}},
    }
    save_model(UNet(config).eval(), folder / "model.pt", metadata)
    dataset = {"image": {"source": "i"}, "labels": {"source": "l"}, "sections": {"validation": "2"}}
    ingest("tiny", dataset, tiny_isbi / "train-volume.tif", tiny_isbi / "train-labels.tif", folder / "volume.zarr")
    return folder


@pytest.mark.workflow
def test_onnx_takes_any_batch_and_legal_tile_size(trained, tmp_path):
    model, metadata = load_model(trained / "model.pt")
    packaged = Packaged(model, metadata["normalisation"]).eval()
    minimum, step, margin = tile_sizes(metadata)
    assert (minimum, step, margin) == (44, 4, 20)
    rng = np.random.default_rng(0)
    difference = export_onnx(packaged, rng.uniform(0, 255, (1, 1, 108, 108)).astype(np.float32), tmp_path / "m.onnx")
    assert difference <= export.TOLERANCE
    assert not any(node.metadata_props for node in onnx.load(str(tmp_path / "m.onnx")).graph.node), "debug records"
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    for shape in ((3, 1, minimum, minimum), (2, 1, minimum + 5 * step, minimum + 2 * step)):
        raw = rng.uniform(0, 255, shape).astype(np.float32)
        exported = session.run(None, {session.get_inputs()[0].name: raw})[0]
        with torch.no_grad():
            reference = packaged(torch.from_numpy(raw)).numpy()
        assert exported.shape == (shape[0], 1, shape[2] - 2 * margin, shape[3] - 2 * margin)
        assert np.abs(exported - reference).max() <= 1e-4
        assert 0 <= exported.min() and exported.max() <= 1, "probabilities: the softmax is in the graph"


@pytest.mark.workflow
def test_package_passes_bioimageio_test_model(trained, tmp_path):
    from bioimageio.core import test_model

    result = export_model(
        trained / "model.pt", trained / "volume.zarr", tmp_path / "m.onnx", tmp_path / "p.zip", "tiny.model"
    )
    assert result["opset"] == export.OPSET and result["onnx_max_difference"] <= export.TOLERANCE
    summary = test_model(tmp_path / "p.zip")
    assert summary.status == "passed", summary.format()


@pytest.mark.workflow
def test_an_export_that_differs_from_pytorch_is_refused(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export, "TOLERANCE", -1.0)
    with pytest.raises(PipelineError, match="ONNX differs from PyTorch"):
        export_model(
            trained / "model.pt", trained / "volume.zarr", tmp_path / "m.onnx", tmp_path / "p.zip", "tiny model"
        )
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "p.zip").exists()


def test_a_missing_model_is_named(trained, tmp_path):
    with pytest.raises(PipelineError, match="nothing.pt: model file not found"):
        export_model(
            tmp_path / "nothing.pt", trained / "volume.zarr", tmp_path / "m.onnx", tmp_path / "p.zip", "x model"
        )


def test_test_tile_fits_small_sections(trained):
    _, metadata = load_model(trained / "model.pt")
    assert export.test_tile(trained / "volume.zarr", metadata).shape == (1, 1, 108, 108)
    large = metadata | {"input_size": 300}
    assert export.test_tile(trained / "volume.zarr", large).shape == (1, 1, 128, 128), "largest legal size <= 128"
    deep = {**metadata, "model": {**metadata["model"], "levels": 6}}  # smallest legal tile 380 > 128: mirrored
    assert export.test_tile(trained / "volume.zarr", deep | {"input_size": 380}).shape == (1, 1, 380, 380)


def test_a_package_is_the_same_bytes_whenever_it_is_made(tmp_path):
    """Zip entries carry the time they were written; the package's are stamped alike (the kill test compares
    outputs byte for byte, benchmarks/kill_test.py)."""
    import zipfile

    for name, hour in (("a.zip", 3), ("b.zip", 17)):
        with zipfile.ZipFile(tmp_path / name, "w") as package:
            entries = [("rdf.yaml", b"name: m"), ("weights.onnx", b"\x08\x09")]
            for entry in entries if hour == 3 else entries[::-1]:  # the same entries, in another order
                package.writestr(zipfile.ZipInfo(entry[0], date_time=(2026, 12, 3, hour, 0, 0)), entry[1])
        export._same_bytes_zip(tmp_path / name)
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    with zipfile.ZipFile(tmp_path / "a.zip") as package:
        assert package.read("rdf.yaml") == b"name: m" and package.namelist() == ["rdf.yaml", "weights.onnx"]
