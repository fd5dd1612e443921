# Shared helpers of the rules: where results go and how config sources map to files.

import sys
from pathlib import Path

# The library under workflow/. Tests and benchmarks import it installed (pip install -e .); Snakemake's
# own process must import it too when it was started from an environment where it is not installed
# (snakemake --use-conda from a plain Snakemake env), so the rules put it on the path here, and the
# rule scripts do the same in their conda envs through scripts/_library_path.py.
sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))

from snakemake.exceptions import WorkflowError
from unet_pipeline.core.checksums import hash_prefix_in_name
from unet_pipeline.data.sources import (
    SAFE_FILENAME,
    Source,
    check_outside,
    check_results,
    pretrained_url,
    public_dataset,
    public_location,
    public_spec,
    resolve_source,
)
from unet_pipeline.models.tile_geometry import geometry_of
from unet_pipeline.segmentation.methods import TUNED as SEGMENTATION_TUNED

RESULTS = config["results"]
MODELS = f"{RESULTS}/{{trainset}}/models/{{preset}}"  # one folder per preset and training dataset
# Every result's path pattern, once: rules use them as inputs and outputs, all_targets() fills them in.
PATHS = {
    "download": f"{RESULTS}/downloads/{{dataset}}/{{role}}/{{filename}}",
    "weights_download": f"{RESULTS}/downloads/weights/{{filename}}",
    "volume": f"{RESULTS}/{{dataset}}/volume.zarr",
    "weights": f"{RESULTS}/{{dataset}}/weights.zarr",
    "weight_map_figure": f"{RESULTS}/{{dataset}}/figures/weight_map.png",
    "augmented": f"{RESULTS}/{{dataset}}/augmented/{{preset}}.zarr",
    "augmented_figure": f"{RESULTS}/{{dataset}}/figures/augmented_{{preset}}.png",
    "model_dir": MODELS,
    "model": f"{MODELS}/model.pt",
    "onnx": f"{MODELS}/model.onnx",
    "bioimageio": f"{MODELS}/{{preset}}.bioimageio.zip",
    "prediction": f"{RESULTS}/{{dataset}}/predictions/{{preset}}.zarr",
    "prediction_work": f"{RESULTS}/{{dataset}}/predictions/.{{preset}}.zarr.partial",
    "prediction_shard": f"{RESULTS}/{{dataset}}/predictions/.{{preset}}.shards/{{shard}}.done",
    "submission": f"{RESULTS}/{{dataset}}/predictions/{{preset}}.tif",
    "evaluation_dir": f"{RESULTS}/{{dataset}}/evaluation/{{preset}}",
    "summary": f"{RESULTS}/{{dataset}}/evaluation/{{preset}}/summary.json",
    "headline_scores": f"{RESULTS}/evaluation/headline_scores_{{preset}}.csv",
    "segmentation": f"{RESULTS}/{{dataset}}/segmentation/{{preset}}.zarr",
    "cell_table": f"{RESULTS}/{{dataset}}/segmentation/{{preset}}_cells.csv",
    "segmentation_shard": f"{RESULTS}/{{dataset}}/segmentation/.{{preset}}.shards/{{shard}}.done",
    "cells_submission": f"{RESULTS}/{{dataset}}/segmentation/{{preset}}.tif",
    "prediction_figure": f"{RESULTS}/{{dataset}}/figures/prediction_{{preset}}.png",
}
# Each job's log and Snakemake benchmark record, named by its rule and wildcards (log_of, benchmark_of).
JOB_RECORD = f"{RESULTS}/{{kind}}/{{rule}}/{{job}}.{{suffix}}"
DATASETS = config["datasets"]
PRESETS = config.get("presets", {})
PRESET = config["preset"]
TRAIN_DATASET = config.get("train_dataset")
PRETRAINED = config["pretrained_weights"]
PREDICTION_OPTIONS = {
    key: value for key, value in config["prediction"].items() if key not in ("submission_tiff", "shards")
}
PREDICTION_SHARDS = config["prediction"]["shards"]
MEASURED_TILE = config["prediction"]["input_size"] is None  # the first job of a prediction measures the tile
SHARD_GIB = 4  # prediction.shards: auto = one shard per this many GiB of (uint8) input
CLUSTER_THREADS = 8  # a parallel stage's threads where Snakemake has no --cores (a cluster profile)


def _job_record(kind, suffix, rule, wildcards):
    job = ".".join(f"{{{name}}}" for name in wildcards)
    return JOB_RECORD.format(kind=kind, rule=rule, job=job, suffix=suffix)


def log_of(rule, *wildcards):
    """The log of a job of ``rule``: results/logs/RULE/{W1}.{W2}.log for its wildcards W1, W2."""
    return _job_record("logs", "log", rule, wildcards)


def benchmark_of(rule, *wildcards):
    """Snakemake's run-time and memory record of a job of ``rule``: results/benchmarks/RULE/{W1}.{W2}.tsv."""
    return _job_record("benchmarks", "tsv", rule, wildcards)


def labelled(dataset):
    """Whether the config declares labels for ``dataset`` (False for a name it does not declare)."""
    return bool(DATASETS.get(dataset, {}).get("labels"))


def stage_threads():
    """A parallel stage's threads (augment, weight maps, train, predict, evaluate): all of --cores, of which
    Snakemake gives a job what is free; on a cluster, where it runs without --cores, CLUSTER_THREADS, which a
    profile's set-threads overrides per rule."""
    try:
        return workflow.cores
    except WorkflowError:
        return CLUSTER_THREADS


STAGE_THREADS = stage_threads()


def trainset_name(datasets):
    """The training set's name in paths ({trainset}): its dataset's name, or several datasets' joined by '+'."""
    return datasets if isinstance(datasets, str) else "+".join(datasets)


def trainset_datasets(trainset):
    """The datasets of a training set's name, the first of which is its reference (trainset_name)."""
    return trainset.split("+")


for _name, _preset in PRESETS.items():
    _value = _preset.get("train_dataset") or TRAIN_DATASET
    for _dataset in [] if _value is None else trainset_datasets(trainset_name(_value)):
        if not labelled(_dataset):
            raise ValueError(
                f"preset {_name!r}: train_dataset {_dataset!r} must be a dataset of the config with labels"
            )
check_results(RESULTS, DATASETS)
for _name, _dataset in DATASETS.items():
    for _role in ("image", "labels"):
        check_outside(resolve_source(_dataset, _role), RESULTS, f"dataset {_name!r}, {_role}")
for name in config["prediction"]["submission_tiff"]:
    if name not in DATASETS:
        raise ValueError(f"prediction.submission_tiff names {name!r}, which is not a dataset of the config")
if TRAIN_DATASET is not None and PRESET not in PRESETS:
    raise ValueError(f"preset {PRESET!r} is not among the presets of the config ({sorted(PRESETS)})")


wildcard_constraints:
    dataset="[A-Za-z0-9][A-Za-z0-9_.-]*",
    trainset=r"[A-Za-z0-9][A-Za-z0-9_.-]*(\+[A-Za-z0-9][A-Za-z0-9_.-]*)*",
    preset="[A-Za-z0-9][A-Za-z0-9_-]*",
    role="image|labels",
    shard="[0-9]+-of-[0-9]+",
    filename=SAFE_FILENAME,


def dataset_source(dataset, role):
    """The resolved image or labels source of a configured dataset (None if absent)."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset {dataset!r} is not declared in the config (known: {sorted(DATASETS)})")
    return resolve_source(DATASETS[dataset], role)


def local_file(dataset, role):
    """The local file a stage reads for a source: the download for a URL, else the path itself."""
    source = dataset_source(dataset, role)
    if source.remote:
        return PATHS["download"].format(dataset=dataset, role=role, filename=source.filename)
    return source.location


def ingest_inputs(wildcards):
    """Image and (when declared) labels files of a dataset, for the ingest rule."""
    inputs = {"image": local_file(wildcards.dataset, "image")}
    if labelled(wildcards.dataset):
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
    return PATHS["weights_download"].format(filename=Source(PRETRAINED[name], remote=True).filename)


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
    """The pretrained-weights URL a download_weights job fetches, without credentials (the job reads the whole
    URL from the config: Snakemake records params), and the sha256 prefix its name carries."""
    url = public_location(pretrained_url(PRETRAINED, wildcards.filename))
    return {"url": url, "sha256": hash_prefix_in_name(wildcards.filename)}


def trained_on(preset):
    """The training set (trainset_name) whose model of ``preset`` the other stages use: the preset's
    train_dataset, else the config's; None without either."""
    value = PRESETS[preset].get("train_dataset") or TRAIN_DATASET
    return None if value is None else trainset_name(value)


def model_file(wildcards):
    """The model a prediction or segmentation of ``wildcards.preset`` uses."""
    return PATHS["model"].format(trainset=trained_on(wildcards.preset), preset=wildcards.preset)


def train_inputs(wildcards):
    """The augmented sets and volumes of the training datasets (lists, in the order of their names), the encoder's
    starting weights and the model fine-tuning starts from (init_from), if any."""
    datasets = trainset_datasets(wildcards.trainset)
    for dataset in datasets:
        if not labelled(dataset):
            raise ValueError(f"{dataset!r} has no labels to train on")
    inputs = {
        "augmented": [PATHS["augmented"].format(dataset=name, preset=wildcards.preset) for name in datasets],
        "volume": [PATHS["volume"].format(dataset=name) for name in datasets],
    }
    weights = encoder_weights_file(wildcards.preset)
    if weights:
        inputs["encoder_weights"] = weights
    if PRESETS[wildcards.preset].get("init_from"):
        inputs["init_from"] = PRESETS[wildcards.preset]["init_from"]
    return inputs


def augmentation_options(preset):
    """The preset's augmentation (else the top-level one) plus its sample count."""
    return {**(PRESETS[preset].get("augmentation") or config["augmentation"]), "samples": PRESETS[preset]["samples"]}


def segment_inputs(wildcards):
    """The prediction, and the evaluation whose V_rand setting of the cells is used unless the config sets it."""
    inputs = {"prediction": PATHS["prediction"].format(**wildcards)}
    tuned = SEGMENTATION_TUNED[config["segmentation"]["method"]]
    if config["segmentation"][tuned] is None:
        trainset = trained_on(wildcards.preset)
        if trainset is None:
            raise ValueError(f"segmentation.{tuned} is null and no train_dataset is evaluated to choose it; set it")
        reference = trainset_datasets(trainset)[0]
        inputs["summary"] = PATHS["summary"].format(dataset=reference, preset=wildcards.preset)
    return inputs


def shard_count(wildcards):
    """prediction.shards, or for auto one per SHARD_GIB GiB of the ingested volume (waits for its ingest)."""
    if PREDICTION_SHARDS != "auto":
        return PREDICTION_SHARDS
    import math
    import zarr

    volume = checkpoints.ingest.get(dataset=wildcards.dataset).output[0]
    size = math.prod(zarr.open_group(volume, mode="r")["0"].shape)
    return max(1, math.ceil(size / (SHARD_GIB * 2**30)))


def shard_outputs(wildcards):
    """The done-markers of every shard of one prediction."""
    count = shard_count(wildcards)
    return {"shards": [PATHS["prediction_shard"].format(**wildcards, shard=f"{i}-of-{count}") for i in range(count)]}


SEGMENT_SHARDS = config["segmentation"]["shards"]


def segment_shard_outputs(wildcards):
    """The done-markers of every shard of one segmentation (segmentation.shards)."""
    names = [f"{i}-of-{SEGMENT_SHARDS}" for i in range(SEGMENT_SHARDS)]
    return [PATHS["segmentation_shard"].format(**wildcards, shard=name) for name in names]


def all_targets():
    """Everything `snakemake` builds by default: every stage for every dataset."""
    trainset = trained_on(PRESET) if PRESET in PRESETS else None
    path = lambda key, **names: PATHS[key].format(preset=PRESET, trainset=trainset, **names)
    targets = [path("volume", dataset=name) for name in DATASETS]
    targets += [path("weight_map_figure", dataset=name) for name in DATASETS if labelled(name)]
    if trainset is not None:
        targets += [path("augmented_figure", dataset=name) for name in trainset_datasets(trainset)]
        targets += [path("model"), path("bioimageio")]
        targets += [path("prediction_figure", dataset=name) for name in DATASETS]
        targets += [path("segmentation", dataset=name) for name in DATASETS]
        targets += [path("summary", dataset=name) for name in DATASETS if labelled(name)]
        targets += [path("headline_scores")] if any(map(labelled, DATASETS)) else []
        targets += [path("submission", dataset=name) for name in config["prediction"]["submission_tiff"]]
        targets += [path("cells_submission", dataset=name) for name in config["prediction"]["submission_tiff"]]
    return targets
