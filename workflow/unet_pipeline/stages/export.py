"""Export stage: a trained model as ONNX and as a BioImage.IO model package.

ONNX (opset ``OPSET``, PyTorch's torch.export-based exporter) carries the whole
model a user needs: the input normalisation of the training set and the softmax
are part of the graph, so it maps raw gray values (float32, 0-255) of shape
(batch, 1, y, x) to the foreground (cell interior) probability (batch, 1, y', x').
Batch, y and x are dynamic; y and x must be legal tile sizes (``min + k * step``
of the network's geometry) and y' = y - 2 * margin for the unpadded U-Net. The
export is checked against PyTorch with onnxruntime on a test tile (``TOLERANCE``).

The BioImage.IO package (model spec 0.5, written with ``bioimageio.spec``) holds
that ONNX file, a test tile and its output (PyTorch's), a cover image, the
U-Net paper's citation, the training data's description and a README, so that
ilastik, deepImageJ, Fiji and napari users can run the model; the tests check it
with ``bioimageio.core``'s ``test_model``.

TorchScript is no longer written: ``torch.jit.trace`` is deprecated in PyTorch 2.13
and ONNX serves the same users (running the model without this package).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.atomic import atomic_file
from ..models.onnx_export import OPSET, TOLERANCE, checked_difference, onnx_program, session_of
from ..models.tile_geometry import geometry_of
from ..models.unet import load_model

log = logging.getLogger(__name__)

UNET_CITATION = {
    "text": "Ronneberger, Fischer, Brox (2015). U-Net: Convolutional Networks for Biomedical Image Segmentation. MICCAI.",
    "doi": "10.1007/978-3-319-24574-4_28",
}
ISBI_CITATION = {
    "text": "Arganda-Carreras et al. (2015). Crowdsourcing the creation of image segmentation algorithms for "
    "connectomics. Frontiers in Neuroanatomy 9:142 (the ISBI 2012 challenge data).",
    "doi": "10.3389/fnana.2015.00142",
}


class Packaged(nn.Module):
    """The network with its input normalisation and softmax: raw gray values -> foreground probability."""

    def __init__(self, model: nn.Module, normalisation: dict):
        super().__init__()
        self.model = model
        self.mean, self.std = float(normalisation["mean"]), float(normalisation["std"])

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        logits = self.model((raw / 255.0 - self.mean) / self.std)
        return torch.softmax(logits, dim=1)[:, 1:2]


def tile_sizes(metadata: dict) -> tuple[int, int, int]:
    """(smallest legal input size, step between legal sizes, margin per side) of the model's geometry."""
    geometry = geometry_of(metadata["model"])
    sizes = geometry.legal_input_sizes(1, 4096)
    step = sizes[1] - sizes[0]
    margin = (sizes[0] - geometry.output_size(sizes[0])) // 2
    return sizes[0], step, margin


def export_onnx(packaged: Packaged, test_input: np.ndarray, path) -> float:
    """Write the ONNX file (dynamic batch, y and x) and return its max difference to PyTorch on ``test_input``.

    Raises PipelineError when the difference exceeds ``TOLERANCE``; the file is then not written.
    """
    example = torch.from_numpy(test_input)
    # DYNAMIC, not AUTO: the export fails rather than fixing a size, and its tracing is 15-20 % quicker
    # (benchmarks/export_speed.py; the TorchScript exporter is 15x quicker but freezes the crops to the tile).
    dims = {0: torch.export.Dim("batch", min=1, max=1024), 2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}
    with atomic_file(path) as tmp:
        onnx_program(packaged, example, dims).save(str(tmp))
        _without_debug_records(tmp)
        return checked_difference(session_of(str(tmp)), packaged, test_input, path)


def _without_debug_records(path: Path) -> None:
    """Drop the exporter's per-node debug records (stack traces with the paths of the calling script, which
    Snakemake names anew for every job): the file is then the same bytes for the same network."""
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
    onnx.save(model, str(path))


def _same_bytes_zip(path: Path) -> None:
    """Rewrite a zip with every entry stamped 1980-01-01 and in name order, so that the package of the same
    model is the same bytes whenever it is made (zip entries otherwise carry the time they were written)."""
    import zipfile

    with zipfile.ZipFile(path) as source:
        entries = [(info, source.read(info)) for info in sorted(source.infolist(), key=lambda info: info.filename)]
    with zipfile.ZipFile(path, "w") as target:
        for info, data in entries:
            stamped = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            stamped.compress_type, stamped.external_attr = info.compress_type, info.external_attr
            target.writestr(stamped, data)


def test_tile(volume_path, metadata: dict) -> np.ndarray:
    """A (1, 1, n, n) float32 tile of raw gray values from the middle of a held-out section of the training volume.

    n is the training tile size, or the largest legal size that fits the section; a section smaller than
    the smallest legal tile is mirrored to that size.
    """
    from ..data import volume_store

    volume = volume_store.open_store(volume_path)
    sections = volume_store.provenance(volume)["sections"]
    section = (sections.get("test") or sections.get("validation") or [0])[0]
    image = volume[volume_store.IMAGE_PATH][section]
    fitting = geometry_of(metadata["model"]).legal_input_sizes(1, min(min(image.shape), metadata["input_size"]))
    size = fitting[-1] if fitting else tile_sizes(metadata)[0]
    if min(image.shape) < size:
        image = np.pad(image, [(0, max(size - n, 0)) for n in image.shape], mode="symmetric")
    top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    return image[top : top + size, left : left + size].astype(np.float32)[None, None]


def _cover(test_input: np.ndarray, test_output: np.ndarray, path) -> None:
    from ..core.figures import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8, 4), constrained_layout=True)
    axes[0].imshow(test_input[0, 0], cmap="gray")
    axes[1].imshow(test_output[0, 0], cmap="magma", vmin=0, vmax=1)
    for axis, title in zip(axes, ("input tile", "foreground probability")):
        axis.set_title(title)
        axis.set_axis_off()
    fig.savefig(path, dpi=64)
    plt.close(fig)


def _readme(metadata: dict, name: str, data: dict) -> str:
    minimum, step, margin = tile_sizes(metadata)
    return f"""# {name}

U-Net (Ronneberger, Fischer, Brox 2015) trained by the unet-pipeline Snakemake workflow.

- Input `raw`: gray values as float32 in 0-255, shape (batch, 1, y, x); y and x of {minimum} + k * {step} px.
  The training set's normalisation (mean {metadata["normalisation"]["mean"]:.6f}, std
  {metadata["normalisation"]["std"]:.6f} of x / 255) is part of the network.
- Output `probability`: foreground (cell interior) probability, (batch, 1, y - {2 * margin}, x - {2 * margin}): the
  input tile minus {margin} px of context per side. Predict large images with overlapping tiles.
- Training: {json.dumps(metadata.get("training", {}))}
- Training data: {json.dumps(data)}

## Validation

The pipeline's evaluate stage scores predictions with the ISBI 2012 metrics exactly as the organisers' Fiji code
computes them (V_rand, V_info, Rand, pixel and warping error) on held-out sections; see its summary.json and report.
The test tile of this package is reproduced by the ONNX weights to within {TOLERANCE} of PyTorch.
"""


def _training_data(volume_path) -> dict:
    """Name, sources and pixel checksums of the training dataset, from its volume store."""
    from ..data import volume_store
    from ..data.sources import public_location

    info = volume_store.provenance(volume_store.open_store(volume_path))
    data = {"dataset": info["dataset"], "sections": info["sections"]}
    for role in ("image", "labels"):
        if info.get(role):
            source = public_location(info[role]["source"])  # also for stores ingested before sources were stripped
            data[role] = {"source": source, "pixel_sha256": info[role]["pixel_sha256"]}
    return data


def _tensor(spec, kind: str, files: dict, axes: list, data):
    """An input (kind "input", id raw) or output (kind "output", id probability) tensor of the package."""
    descr, tensor_id, channel, description = {
        "input": (spec.InputTensorDescr, "raw", "gray", "gray values, float32 0-255"),
        "output": (spec.OutputTensorDescr, "probability", "foreground", "foreground (cell interior) probability"),
    }[kind]
    return descr(
        id=spec.TensorId(tensor_id),
        description=description,
        axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=[spec.Identifier(channel)]), *axes],
        test_tensor=spec.FileDescr(source=files[f"test_{kind}"]),
        sample_tensor=spec.FileDescr(source=files[f"sample_{kind}"]),
        data=data,
    )


def _description(metadata: dict, files: dict, name: str, data: dict):
    """The bioimageio.spec 0.5 model description of the package's files."""
    from bioimageio.spec.dataset.v0_3 import DatasetDescr
    from bioimageio.spec.model import v0_5 as spec

    minimum, step, margin = tile_sizes(metadata)
    size_in = spec.ParameterizedSize(min=minimum, step=step)
    size_out = {
        a: spec.SizeReference(tensor_id=spec.TensorId("raw"), axis_id=spec.AxisId(a), offset=-2 * margin) for a in "yx"
    }
    inputs = [spec.SpaceInputAxis(id=spec.AxisId(a), size=size_in) for a in "yx"]
    outputs = [spec.SpaceOutputAxis(id=spec.AxisId(a), size=size_out[a]) for a in "yx"]
    training_data = DatasetDescr(
        name=f"training data: {data['dataset']}",
        description=f"Sources, sections and pixel checksums as the pipeline recorded them: {json.dumps(data)}",
        cite=[spec.CiteEntry(**ISBI_CITATION)],
    )
    return spec.ModelDescr(
        name=name,
        description="U-Net for cell/membrane segmentation of EM sections, trained by the unet-pipeline workflow.",
        authors=[spec.Author(name="unet-pipeline")],
        cite=[spec.CiteEntry(**UNET_CITATION)],
        license=spec.LicenseId("MIT"),
        documentation=spec.FileDescr(source=files["readme"]),
        covers=[spec.FileDescr(source=files["cover"])],
        tags=["unet", "segmentation", "electron-microscopy", "2d", "onnx"],
        inputs=[_tensor(spec, "input", files, inputs, spec.IntervalOrRatioDataDescr(type="float32"))],
        outputs=[
            _tensor(spec, "output", files, outputs, spec.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)))
        ],
        weights=spec.WeightsDescr(onnx=spec.OnnxWeightsDescr(source=files["onnx"], opset_version=OPSET)),
        training_data=training_data,
    )


def _package_files(folder: Path, tiles: tuple[np.ndarray, np.ndarray], onnx_path, readme: str) -> dict:
    """Write the package's files into ``folder``: test and sample tensors, cover, README and the ONNX weights."""
    import tifffile

    test_input, test_output = tiles
    files = {"onnx": folder / "model.onnx", "cover": folder / "cover.png", "readme": folder / "README.md"}
    for kind, tile in (("input", test_input), ("output", test_output)):
        files[f"test_{kind}"], files[f"sample_{kind}"] = folder / f"test_{kind}.npy", folder / f"sample_{kind}.tif"
        np.save(files[f"test_{kind}"], tile)
        tifffile.imwrite(files[f"sample_{kind}"], tile[0, 0])
    _cover(test_input, test_output, files["cover"])
    files["readme"].write_text(readme)
    shutil.copyfile(onnx_path, files["onnx"])
    return files


def export_model(model_path, volume_path, onnx_path, package_path, name: str) -> dict:
    """ONNX file and BioImage.IO package (zip) of a trained model.

    Args:
        model_path: ``model.pt`` of the train stage.
        volume_path: the training dataset's volume store (the test tile comes from a held-out section).
        onnx_path, package_path: outputs, each written atomically.
        name: the model's name in the package, at least 5 characters (e.g. "U-Net laptop (isbi2012)"); characters
            the BioImage.IO spec does not allow in names become "-".

    Returns:
        {"onnx_max_difference": max |ONNX - PyTorch| on the test tile, "opset": OPSET}
    """
    from bioimageio.spec import save_bioimageio_package

    name = re.sub(r"[^A-Za-z0-9_+\- ()]", "-", name)
    for path in (onnx_path, package_path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    model, metadata = load_model(model_path, "cpu")
    packaged = Packaged(model, metadata["normalisation"]).eval()
    test_input = test_tile(volume_path, metadata)
    difference = export_onnx(packaged, test_input, onnx_path)
    with torch.no_grad():
        test_output = packaged(torch.from_numpy(test_input)).numpy()
    data = _training_data(volume_path)
    with tempfile.TemporaryDirectory() as folder, atomic_file(package_path) as tmp:
        files = _package_files(Path(folder), (test_input, test_output), onnx_path, _readme(metadata, name, data))
        zipped = tmp.with_suffix(".zip")  # bioimageio.spec wants the .zip suffix
        try:
            save_bioimageio_package(_description(metadata, files, name, data), output_path=zipped)
            _same_bytes_zip(zipped)
            zipped.replace(tmp)
        finally:
            zipped.unlink(missing_ok=True)
    log.info("exported %s: ONNX opset %d (max |ONNX - PyTorch| %.2e), %s", model_path, OPSET, difference, package_path)
    return {"onnx_max_difference": difference, "opset": OPSET}
