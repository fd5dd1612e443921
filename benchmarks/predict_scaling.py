"""Sharded prediction: throughput of 1 shard against 2 shards of one thread each, through the workflow.

    python benchmarks/predict_scaling.py [--data DIR] [--tiles 8] [--results results_scaling]
                                         [--input-size 348]

The volume is the ISBI test volume tiled tiles x tiles in y and x (8: 30 x 4096 x 4096,
0.5 GB of uint8), ingested once. A laptop-preset network with random weights (speed
does not depend on the weights) is placed where the train rule would write it, and
`snakemake --cores 2` predicts the volume with `prediction.shards: 1` and then 2,
every prediction job limited to one thread (`--set-threads`), only the ingest and
prediction rules allowed, and both with the same tile (``--input-size``; left to the
measured choice, the two runs could pick different tiles and compare those instead). Printed: wall time of each run (the whole snakemake
run: setup and finishing jobs included), throughput, their ratio, each
prediction job's peak memory, start-up (``startup_seconds``) and cores used (CPU time
over wall time) from Snakemake's benchmark files and the logs, the CPU, and whether
the outputs are identical.
"""

import argparse
import csv
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
import yaml
from predict_speed import preset_model
from shipped_workflow import ISBI_DATA, cpu_model
from unet_pipeline.data import volume_store

REPO = Path(__file__).resolve().parents[1]
ALLOWED = ["ingest", "predict", "predict_setup", "predict_shard"]


def tiled_volume(data: Path, tiles: int, path: Path) -> tuple[int, ...]:
    """The ISBI test volume tiled in y and x, written section by section as a TIFF stack."""
    stack = tifffile.imread(data / "test-volume.tif")
    with tifffile.TiffWriter(path, bigtiff=True) as tiff:
        for section in stack:
            tiff.write(np.tile(section, (tiles, tiles)), photometric="minisblack", contiguous=True)
    return (stack.shape[0], stack.shape[1] * tiles, stack.shape[2] * tiles)


def run(results: Path, shards: int, cores: int, target: str, input_size: int) -> float:
    config = {
        "results": str(results),
        "preset": "laptop",
        "datasets": {"big": {"image": {"source": str(results / "big.tif")}, "sections": {"test": "all"}}},
        "prediction": {"shards": shards, "submission_tiff": [], "input_size": input_size},
    }
    overlay = results / f"shards{shards}.yaml"
    overlay.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(REPO)]
    command += ["--cores", str(cores), "--configfile", str(REPO / "config" / "config.yaml"), str(overlay)]
    command += ["--set-threads", "predict=1", "predict_shard=1", "--allowed-rules", *ALLOWED]
    command += ["--", str(results / target)]
    start = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    if finished.returncode != 0:
        raise SystemExit(f"snakemake failed:\n{finished.stdout[-3000:]}{finished.stderr[-3000:]}")
    return time.perf_counter() - start


def startup_seconds(results: Path, rule: str) -> list[float]:
    """Per job: its wall time (benchmark file) minus the time from its first prediction log line to its last line.

    That is what a job costs besides predicting: interpreter and PyTorch start, model and store opening.
    """
    from datetime import datetime

    parse = lambda text: datetime.strptime(text[:23], "%Y-%m-%d %H:%M:%S,%f")
    found = []
    for log in sorted((results / "logs" / rule).glob("*.log")):
        lines = [line for line in log.read_text().splitlines() if line[:4].isdigit()]
        starts = [line for line in lines if "predicting" in line]
        bench = results / "benchmarks" / rule / log.name.replace(".log", ".tsv")
        if starts and bench.exists():
            with open(bench) as handle:
                wall = float(next(csv.DictReader(handle, delimiter="\t"))["s"])
            found.append(round(wall - (parse(lines[-1]) - parse(starts[0])).total_seconds(), 2))
    return found


def job_benchmarks(results: Path, rule: str) -> list[dict]:
    """Snakemake's benchmark row of every job of ``rule``."""
    rows = []
    for bench in sorted((results / "benchmarks" / rule).glob("*.tsv")):
        with open(bench) as handle:
            rows.append(next(csv.DictReader(handle, delimiter="\t")))
    return rows


def peak_memory_mib(results: Path, rule: str) -> list[float]:
    return [float(row["max_rss"]) for row in job_benchmarks(results, rule)]


def cores_used(results: Path, rule: str) -> list[float]:
    """CPU seconds per wall second of each job: above 1 when a one-thread job also keeps another core busy."""
    return [round(float(row["cpu_time"]) / float(row["s"]), 2) for row in job_benchmarks(results, rule)]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ISBI_DATA)
    parser.add_argument("--tiles", type=int, default=8)
    parser.add_argument("--results", type=Path, default=REPO / "results_scaling")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--input-size", type=int, default=348, help="tile size of both runs (laptop network)")
    args = parser.parse_args()
    results = args.results.resolve()
    shutil.rmtree(results, ignore_errors=True)
    results.mkdir(parents=True)
    shape = tiled_volume(args.data, args.tiles, results / "big.tif")
    laptop_model_path = results / "isbi2012" / "models" / "laptop" / "model.pt"  # the config's train_dataset
    laptop_model_path.parent.mkdir(parents=True)
    preset_model(laptop_model_path, "laptop")
    voxels = float(np.prod(shape))
    print(f"ingest of {shape}: {run(results, 1, args.cores, 'big/volume.zarr', args.input_size):.0f} s", flush=True)
    outputs, times, startup, memory, cores = {}, {}, {}, {}, {}
    for shards in (1, 2):
        prediction = results / "big" / "predictions" / "laptop.zarr"
        shutil.rmtree(prediction, ignore_errors=True)
        times[shards] = run(results, shards, args.cores, "big/predictions/laptop.zarr", args.input_size)
        rule = "predict" if shards == 1 else "predict_shard"  # read now: the 2-shard run rewrites predict's log
        startup[shards], memory[shards] = startup_seconds(results, rule), peak_memory_mib(results, rule)
        cores[shards] = cores_used(results, rule)
        outputs[shards] = volume_store.open_store(prediction)["0"][:]
        print(f"shards {shards}: {times[shards]:.0f} s, {voxels / times[shards] / 1e6:.3f} Mvoxel/s", flush=True)
    print(
        f"volume {shape} ({voxels / 2**30:.2f} GiB uint8), {args.cores} cores, {cpu_model()}, tiles {args.input_size}"
    )
    print(f"throughput ratio 2 shards / 1 shard: {times[1] / times[2]:.2f}x")
    print(f"identical outputs: {np.array_equal(outputs[1], outputs[2])}")
    print(f"peak memory per prediction job (MiB): 1 shard {memory[1]}, 2 shards {memory[2]}")
    print(f"start-up per prediction job (s): 1 shard {startup[1]}, 2 shards {startup[2]}")
    print(f"cores used per prediction job (CPU s / wall s): 1 shard {cores[1]}, 2 shards {cores[2]}")


if __name__ == "__main__":
    main()
