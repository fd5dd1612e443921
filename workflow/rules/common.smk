# Shared helpers of the rules: where results go and how config sources map to files.

import sys
from pathlib import Path

# The library under workflow/ (rule scripts reach it through scripts/_library_path.py).
sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))

from unet_pipeline.sources import download_path, resolve_source

RESULTS = config["results"]
DATASETS = config["datasets"]


wildcard_constraints:
    dataset="[A-Za-z0-9][A-Za-z0-9_.-]*",
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


def labelled(dataset):
    return bool(DATASETS[dataset].get("labels"))


def all_targets():
    """Everything `snakemake` builds by default: every stage for every dataset."""
    targets = [f"{RESULTS}/{name}/volume.zarr" for name in DATASETS]
    targets += [f"{RESULTS}/{name}/figures/weight_map.png" for name in DATASETS if labelled(name)]
    return targets
