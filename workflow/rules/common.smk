# Shared helpers of the rules: where results go and how config sources map to files.

import sys
from pathlib import Path

# The library under workflow/ (rule scripts reach it through scripts/_library_path.py).
sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))

from unet_pipeline.sources import download_path, resolve_source
from unet_pipeline.tile_geometry import TileGeometry

RESULTS = config["results"]
DATASETS = config["datasets"]
PRESETS = config.get("presets", {})
PRESET = config["preset"]
TRAIN_DATASET = config.get("train_dataset")

if TRAIN_DATASET is not None and not DATASETS.get(TRAIN_DATASET, {}).get("labels"):
    raise ValueError(f"train_dataset {TRAIN_DATASET!r} must be a dataset of the config with labels")
for name in config["prediction"]["submission_tiff"]:
    if name not in DATASETS:
        raise ValueError(f"prediction.submission_tiff names {name!r}, which is not a dataset of the config")
if TRAIN_DATASET is not None and PRESET not in PRESETS:
    raise ValueError(f"preset {PRESET!r} is not among the presets of the config ({sorted(PRESETS)})")


wildcard_constraints:
    dataset="[A-Za-z0-9][A-Za-z0-9_.-]*",
    preset="[A-Za-z0-9][A-Za-z0-9_-]*",
    role="image|labels",
    filename="[^/]+",


def dataset_source(dataset, role):
    """The resolved image or labels source of a configured dataset (None if absent)."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset {dataset!r} is not declared in the config (known: {sorted(DATASETS)})")
    return resolve_source(DATASETS[dataset], role)


def local_file(dataset, role):
    """The local file a stage reads for a source: the download for a URL, else the path itself."""
    source = dataset_source(dataset, role)
    if source.remote:
        return download_path(RESULTS, dataset, role, source)
    return source.location


def ingest_inputs(wildcards):
    """Image and (when declared) labels files of a dataset, for the ingest rule."""
    inputs = {"image": local_file(wildcards.dataset, "image")}
    if DATASETS[wildcards.dataset].get("labels"):
        inputs["labels"] = local_file(wildcards.dataset, "labels")
    return inputs


def remote_source(wildcards):
    """The remote source a download job fetches; its file name must match the job's."""
    source = dataset_source(wildcards.dataset, wildcards.role)
    if source is None or not source.remote or source.filename != wildcards.filename:
        raise ValueError(f"{wildcards.dataset}: no remote {wildcards.role} source named {wildcards.filename}")
    return source


def preset_geometry(preset):
    """Tile geometry of a preset's network; fails early on an illegal input size."""
    model = PRESETS[preset]["model"]
    geometry = TileGeometry(levels=model["levels"], padded=model["padded"])
    geometry.output_size(PRESETS[preset]["input_size"])
    return geometry


def augmentation_options(preset):
    """The augmentation config plus the preset's sample count."""
    return {**config["augmentation"], "samples": PRESETS[preset]["samples"]}


def labelled(dataset):
    return bool(DATASETS[dataset].get("labels"))


def all_targets():
    """Everything `snakemake` builds by default: every stage for every dataset."""
    targets = [f"{RESULTS}/{name}/volume.zarr" for name in DATASETS]
    targets += [f"{RESULTS}/{name}/figures/weight_map.png" for name in DATASETS if labelled(name)]
    if TRAIN_DATASET is not None:
        targets.append(f"{RESULTS}/{TRAIN_DATASET}/figures/augmented_{PRESET}.png")
        targets.append(f"{RESULTS}/models/{PRESET}/model.pt")
        targets += [f"{RESULTS}/{name}/figures/prediction_{PRESET}.png" for name in DATASETS]
        targets += [f"{RESULTS}/{name}/evaluation/{PRESET}/summary.json" for name in DATASETS if labelled(name)]
        targets += [f"{RESULTS}/{name}/predictions/{PRESET}.tif" for name in config["prediction"]["submission_tiff"]]
    return targets
