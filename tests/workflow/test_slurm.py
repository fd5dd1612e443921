"""The tiny pipeline through profiles/slurm on a real one-node SLURM cluster, against a local run.

CI installs Debian's slurm-wlm and munge (.ci/run). Elsewhere the test is
skipped when they are missing; under CI a missing SLURM is a failure.
"""

import os
import re
import subprocess

import numpy as np
import pytest
from helpers import REPO, run_snakemake, tiny_config, write_config
from slurm_cluster import LocalSlurm, missing_binaries
from unet_pipeline.data import volume_store

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    missing = missing_binaries()
    if missing:
        message = f"SLURM is not installed (missing {missing}); .ci/run installs slurm-wlm and munge"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm")).start()
    yield cluster
    cluster.stop()


def store_arrays(path):
    """Every array of a Zarr store, by path."""
    group = volume_store.open_store(path)
    arrays = {}
    for name, node in group.members(max_depth=None):
        if hasattr(node, "dtype"):
            arrays[name] = node[:]
    return arrays


# What the cluster run must give exactly as a local run: every stage's store.
COMPARED = [
    "tiny/volume.zarr",
    "tiny_test/volume.zarr",
    "tiny/weights.zarr",
    "tiny/augmented/tiny.zarr",
    "tiny/predictions/tiny.zarr",
    "tiny_test/predictions/tiny.zarr",
    "tiny/segmentation/tiny.zarr",
    "tiny_test/segmentation/tiny.zarr",
]


def test_tiny_pipeline_runs_through_sbatch_and_matches_a_local_run(slurm, tiny_isbi, tmp_path, monkeypatch):
    for name in ("local", "cluster"):
        (tmp_path / name).mkdir()
        config = tiny_config(str(tiny_isbi))
        config["prediction"]["input_size"] = 92  # the same tile for both: a measured one may differ by run
        if name == "cluster":  # each volume predicted by a setup job, 2 shard jobs and a finishing job
            config.setdefault("prediction", {})["shards"] = 2
            config["segmentation"] = {"shards": 2}  # and segmented by 2 shard jobs and the segment job
        write_config(tmp_path / name / "config.yaml", config)
    # the local reference builds only what is compared (2 cores: the same threads as the cluster jobs)
    run_snakemake(tmp_path / "local", *[f"results/{store}" for store in COMPARED], "--configfile", "config.yaml")

    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    result = run_snakemake(
        tmp_path / "cluster",
        "--configfile",
        "config.yaml",
        "--profile",
        str(REPO / "profiles" / "slurm"),
        # no accounting on the test cluster: follow jobs with squeue (MinJobAge=600 keeps finished ones visible)
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--latency-wait",
        "5",
    )
    output = result.stdout + result.stderr
    job_ids = set(re.findall(r"SLURM jobid (\d+)", output))
    assert len(job_ids) >= 10, output[-3000:]
    states = subprocess.run(
        ["squeue", "--states=all", "-h", "-o", "%i %T"], env=slurm.env, check=False, capture_output=True, text=True
    ).stdout
    completed = {line.split()[0] for line in states.splitlines() if line.split()[1] == "COMPLETED"}
    assert job_ids <= completed, states

    local, cluster = tmp_path / "local" / "results", tmp_path / "cluster" / "results"
    for store in COMPARED:
        mine, theirs = store_arrays(local / store), store_arrays(cluster / store)
        assert mine.keys() == theirs.keys(), store
        for name in mine:
            np.testing.assert_array_equal(mine[name], theirs[name], err_msg=f"{store}/{name}")
    for dataset in ("tiny", "tiny_test"):  # the predictions above came from 2 shard jobs each, bit for bit
        shard_logs = sorted(p.name for p in (cluster / "logs" / "predict_shard").glob(f"{dataset}.tiny.*.log"))
        assert shard_logs == [f"{dataset}.tiny.0-of-2.log", f"{dataset}.tiny.1-of-2.log"], shard_logs
        assert not list((cluster / dataset / "predictions").glob(".tiny*")), "work store and markers removed"
    for name in ("tiny/evaluation/tiny/sections.csv", "tiny/models/tiny/training_curve.csv"):
        local_table, cluster_table = (local / name).read_text(), (cluster / name).read_text()
        if name.endswith("training_curve.csv"):  # throughput and seconds (the last two) differ, nothing else may
            local_table, cluster_table = (
                re.sub(r",[^,]*,[^,]*$", "", t, flags=re.MULTILINE) for t in (local_table, cluster_table)
            )
        assert local_table == cluster_table, name
