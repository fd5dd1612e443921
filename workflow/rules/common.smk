# Shared helpers of the rules: where results go and how config sources map to files.

import sys
from pathlib import Path

# The library under workflow/ (rule scripts reach it through scripts/_library_path.py).
sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))

from unet_pipeline.checksums import hash_prefix_in_name
from unet_pipeline.sources import Source, download_path, resolve_source
from unet_pipeline.tile_geometry import geometry_of

RESULTS = config["results"]
DATASETS = config["datasets"]
PRESETS = config.get("presets", {})
PRESET = config["preset"]
TRAIN_DATASET = config.get("train_dataset")
PRETRAINED = config["pretrained_weights"]

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
    geometry = geometry_of(PRESETS[preset]["model"])
    geometry.output_size(PRESETS[preset]["input_size"])
    return geometry


def weights_download_path(name):
    """Where the download_weights rule stores the pretrained weights named ``name`` in ``pretrained_weights``."""
    return f"{RESULTS}/downloads/weights/{Source(PRETRAINED[name], remote=True).filename}"


def encoder_weights_file(preset):
    """The file a preset's encoder starts from: a download for a name of ``pretrained_weights``, else the path."""
    value = PRESETS[preset]["model"].get("encoder_weights")
    if not value:
        return None
    if value in PRETRAINED:
        return weights_download_path(value)
    if not Path(value).is_file():
        raise ValueError(
            f"preset {preset!r}: encoder_weights {value!r} is neither a name of pretrained_weights "
            f"({', '.join(sorted(PRETRAINED))}) nor an existing file"
        )
    return value


def pretrained_source(wildcards):
    """The pretrained-weights URL a download_weights job fetches, and the sha256 prefix its name carries."""
    for url in PRETRAINED.values():
        if Source(url, remote=True).filename == wildcards.filename:
            return {"url": url, "sha256": hash_prefix_in_name(wildcards.filename)}
    raise ValueError(f"no URL of pretrained_weights has the file name {wildcards.filename}")


def train_inputs(wildcards):
    """The augmented set and volume of the training dataset, and the encoder's starting weights if any."""
    inputs = {
        "augmented": f"{RESULTS}/{TRAIN_DATASET}/augmented/{wildcards.preset}.zarr",
        "volume": f"{RESULTS}/{TRAIN_DATASET}/volume.zarr",
    }
    weights = encoder_weights_file(wildcards.preset)
    if weights:
        inputs["encoder_weights"] = weights
    return inputs


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
