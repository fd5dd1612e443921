"""Helpers the tests share (fixtures stay in conftest.py)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("UNET_SHARED_DATA", REPO.parent / "shared" / "data" / "isbi2012"))

# sha256 of the pixel bytes, from ../shared/data/isbi2012/README.md
ISBI_PIXEL_SHA256 = {
    "train-volume.tif": "200da3d452d726e6c9ca1ce04b869d4edb727320d23b516d01cce707dc8c4760",
    "train-labels.tif": "a7cb64000a1a7e542682927e19c91339f58f9f178e0bcce4e207371116f0ca36",
    "test-volume.tif": "1b58fa7ec1d0ff9d39a855622db3ff66a97863036339b0d04be51b2f5a99b0e9",
}
ISBI_FILE_SHA256 = {
    "train-volume.tif": "a05df637d576b2387966b7323a34e90e2cdbf86dcaeee86c44d1fd2d616be489",
    "train-labels.tif": "9a9f1056ffd8bac61060b58dc84ad40295c02fc5ff15e68ddfc2f12d211c3dcf",
    "test-volume.tif": "046fbb869a953f1ffa63a9722849fe0aa693ad7a21aa9278a2bff2397d00b16f",
}


def png_summary(path) -> tuple[tuple[int, int], int]:
    """(height, width) of a PNG and the number of distinct colours in it: a blank figure has a handful."""
    from matplotlib.image import imread

    pixels = imread(path)
    return pixels.shape[:2], len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0))


def tiny_config(data_base: str, results: str = "results") -> dict:
    """The tiny pipeline config of .test/config/config.yaml (what CI runs), its datasets read from ``data_base``."""
    config = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
    config["results"] = results
    for dataset in config["datasets"].values():
        dataset["base"] = data_base
    return config


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the workflow's Snakefile with ``workdir`` as working directory."""
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        "--nolock",
        *args,
    ]
    result = subprocess.run(command, check=False, capture_output=True, text=True, cwd=workdir)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def valid_ome_zarr(path: Path):
    """The ome-zarr-models model of an OME-Zarr 0.5 store (an image, with its labels, or a labels group).

    Raises the validator's error, which lists what is wrong, when the store is not valid OME-Zarr.
    """
    import zarr
    from ome_zarr_models import open_ome_zarr

    return open_ome_zarr(zarr.open_group(str(path), mode="r"))


def vgg11_state_dict(seed=0):
    """A state dict with torchvision's vgg11() key names and shapes (classifier included)."""
    import torch
    from unet_pipeline.models.ternausnet import VGG11_CONVOLUTIONS

    generator = torch.Generator().manual_seed(seed)
    state = {}
    for cin, cout, index in VGG11_CONVOLUTIONS:
        state[f"features.{index}.weight"] = torch.randn(cout, cin, 3, 3, generator=generator)
        state[f"features.{index}.bias"] = torch.randn(cout, generator=generator)
    state["classifier.0.weight"] = torch.zeros(8, 8)
    return state


def shipped_config() -> dict:
    """config/config.yaml as the workflow sees it: the schema's defaults filled in (Snakemake's ``validate``)."""
    from snakemake.utils import validate

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    return config


def declared_bomb(path, side=200_000, height=None):
    """A TIFF of about 130 bytes whose header declares one section of ``height`` (default ``side``) x ``side``
    uint8 pixels (40 GB for 200000)."""
    import struct

    tags = [(256, 4, side), (257, 4, height or side), (258, 3, 8), (259, 3, 8), (262, 3, 1), (273, 4, 8)]
    tags += [(277, 3, 1), (278, 4, height or side), (279, 4, 10)]
    ifd = struct.pack("<H", len(tags)) + b"".join(
        struct.pack("<HHII", tag, kind, 1, value) for tag, kind, value in tags
    )
    path.write_bytes(b"II*\x00" + struct.pack("<I", 18) + b"\x78\x9c" + b"\x00" * 8 + ifd + b"\x00" * 4)
    return path


def prediction_store(path: Path, probability: np.ndarray, chunks=None, scale=None):
    """A prediction store of (z, y, x) probabilities, stored as the predict stage stores them (uint8), in chunks
    of one section unless ``chunks`` says otherwise; ``scale``: a voxel size (z, y, x) in nanometres. Returns its
    Zarr group."""
    import zarr
    from unet_pipeline.data import volume_store
    from unet_pipeline.stages.predict import output_attrs

    root = zarr.open_group(str(path), mode="w")
    chunks = chunks or (1, *probability.shape[1:])
    volume_store.create_level(root, "0", probability.shape, chunks, "uint8")[:] = np.rint(probability * 255)
    root.attrs.update(output_attrs({"model": "m.pt"}, path))
    if scale is not None:
        root.attrs["ome"] = volume_store.image_attrs("probability", list(scale), "nanometer")
    return root


TILE_OUTPUT = 64  # shrunk presets' output tiles cover this many pixels


def shrunk(preset: dict) -> dict:
    """The preset with its network and settings, at CI size."""
    from unet_pipeline.models.tile_geometry import geometry_of

    preset = copy.deepcopy(preset)
    preset["input_size"] = geometry_of(preset["model"]).input_size_for_output(TILE_OUTPUT)
    preset["samples"] = 4
    training = preset.setdefault("training", {})
    training.update(iterations=2, validate_every=2, log_every=1, batch_size=min(training.get("batch_size", 1), 2))
    return preset
