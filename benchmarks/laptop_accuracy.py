"""Train and evaluate the laptop preset on ISBI 2012 through the workflow, and report time and scores.

    python benchmarks/laptop_accuracy.py [--data ../shared/data/isbi2012] [--results results_laptop_accuracy]
                                         [--rescore]

Runs the real pipeline (`snakemake --cores 2`) with the default config, its two
ISBI datasets pointed at a local copy, into a fresh results folder: ingest,
weight maps, augmentation, training on the config's training sections (checkpoint
chosen on the validation sections), prediction and the evaluation of the test
sections at the thresholds chosen on validation. Prints the training time from
the train rule's benchmark file, the whole run's wall time, the CPU, and the
evaluation summary: held-out values, and the best over thresholds beside them.
Beside the training loop's own rate (its log's last tiles/s) it prints what
``train_speed.py`` measures for the bare network step with the preset's settings
in the same run (bf16 autocast where the CPU has bf16 instructions,
channels_last), so the loop's overhead shows.
``--rescore`` keeps a finished results folder and reruns only the evaluation (after
a change of the metrics; training is deterministic, so the scores are those of a
full run).
"""

import argparse
import json
import shutil
import time
from pathlib import Path

import torch
import yaml
from shipped_workflow import REPO, cpu_model, run_shipped
from train_speed import measure
from unet_pipeline.evaluate import describe


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "isbi2012")
    parser.add_argument("--results", type=Path, default=REPO / "results_laptop_accuracy")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--rescore", action="store_true", help="keep the trained model, rerun the evaluation")
    args = parser.parse_args()
    results = args.results.resolve()
    if results.exists() and not args.rescore:
        shutil.rmtree(results)
    results.mkdir(parents=True, exist_ok=True)
    data = str(args.data.resolve())
    overlay = {
        "results": str(results),
        "preset": "laptop",
        "datasets": {"isbi2012": {"base": data}, "isbi2012_test": {"base": data}},
    }
    start = time.perf_counter()
    finished = run_shipped(overlay, "local", args.cores, options=["--forcerun", "evaluate"] if args.rescore else [])
    if finished.returncode != 0:
        raise SystemExit(f"the workflow failed:\n{finished.stdout[-3000:]}{finished.stderr[-3000:]}")
    wall = time.perf_counter() - start
    train_seconds = float(
        (results / "benchmarks" / "train" / "isbi2012.laptop.tsv").read_text().splitlines()[1].split("\t")[0]
    )
    summary = json.loads((results / "isbi2012" / "evaluation" / "laptop" / "summary.json").read_text())
    if args.rescore:  # the train rule only found its finished checkpoint: its time says nothing
        print(f"rescoring run wall time {wall / 60:.1f} min ({args.cores} cores, {cpu_model()})")
    else:
        print(
            f"pipeline wall time {wall / 60:.1f} min; train rule {train_seconds / 60:.1f} min "
            f"({args.cores} cores, {cpu_model()})"
        )
        loop = [line for line in (results / "logs" / "train" / "isbi2012.laptop.log").read_text().splitlines()]
        rate = float(next(line for line in reversed(loop) if "tiles/s" in line).split(", ")[-1].split()[0])
        preset = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["presets"]["laptop"]
        bare = measure(preset, preset["training"].get("amp", "bf16"), 50, torch.device("cpu"), "channels_last")
        print(f"training loop {rate:.1f} tiles/s; bare network step (train_speed.py) {bare['tiles_per_s']:.1f} tiles/s")
    print(describe(summary))


if __name__ == "__main__":
    main()
