"""Train and evaluate the laptop preset on ISBI 2012 through the workflow, and report time and scores.

    python benchmarks/laptop_accuracy.py [--data DIR] [--results results_laptop_accuracy]
                                         [--rescore [--no-tta]]

Runs the real pipeline (`snakemake --cores 2`) with the default config, its two
ISBI datasets pointed at a local copy, into a fresh results folder: ingest,
weight maps, augmentation, training on the config's training sections (checkpoint
chosen on the validation sections), prediction and the evaluation of the test
sections at the thresholds chosen on validation. Prints the training time from
the train rule's benchmark file, the whole run's wall time, the CPU, and the
evaluation summary: held-out values, and the best over thresholds beside them.
Beside the training loop's own rate (the median of its log windows' tiles/s, validation excluded)
it prints what ``train_speed.py`` measures for the bare network step with the
preset's settings (bf16 autocast where the CPU has bf16 instructions,
channels_last) just before and just after the workflow, so the loop's overhead
shows apart from the machine's drift during the run.
``--rescore`` keeps a finished results folder and reruns only the evaluation (after
a change of the metrics; training is deterministic, so the scores are those of a
full run); with ``--no-tta`` it predicts again without test-time augmentation, which
gives the augmentation's effect on the same model.
"""

import argparse
import json
import shutil
import time
from pathlib import Path

import torch
from shipped_workflow import ISBI_DATA, REPO, cpu_model, run_shipped, shipped_config
from train_speed import measure
from unet_pipeline.models.devices import cpu_has_bf16
from unet_pipeline.stages.evaluate import describe
from unet_pipeline.training.options import TrainingOptions


def bare_step_rate() -> float:
    """Tiles/s of the laptop preset's bare training step on the CPU (train_speed.py's measure, 200 steps)."""
    preset = shipped_config()["presets"]["laptop"]
    amp = TrainingOptions(**preset["training"]).amp
    if not cpu_has_bf16():  # the training runs float32 there (models.devices); emulated bf16 is far slower
        amp = "none"
    return measure(preset, amp, 200, torch.device("cpu"), "channels_last")["tiles_per_s"]


def loop_rate(results: Path) -> float:
    """The training loop's rate: the median of the tiles/s of its log windows (each since the last log or
    validation)."""
    lines = (results / "logs" / "train" / "isbi2012.laptop.log").read_text().splitlines()
    rates = sorted(float(line.split(", ")[-1].split()[0]) for line in lines if line.endswith("tiles/s"))
    return rates[len(rates) // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ISBI_DATA)
    parser.add_argument("--results", type=Path, default=REPO / "results_laptop_accuracy")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--rescore", action="store_true", help="keep the trained model, rerun the evaluation")
    parser.add_argument("--no-tta", action="store_true", help="with --rescore: predict again without TTA")
    args = parser.parse_args()
    if args.no_tta and not args.rescore:
        parser.error("--no-tta rescores a finished run: add --rescore")
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
    options = ["--forcerun", "predict" if args.no_tta else "evaluate"] if args.rescore else []
    if args.no_tta:
        overlay["prediction"] = {"tta": False}
    before = None if args.rescore else bare_step_rate()
    start = time.perf_counter()
    finished = run_shipped(overlay, "local", args.cores, options=options)
    if finished.returncode != 0:
        raise SystemExit(f"the workflow failed:\n{finished.stdout[-3000:]}{finished.stderr[-3000:]}")
    wall = time.perf_counter() - start
    if args.rescore:  # the train rule only found its finished checkpoint: its time says nothing
        print(f"rescoring run wall time {wall / 60:.1f} min ({args.cores} cores, {cpu_model()})")
    else:
        train = (results / "benchmarks" / "train" / "isbi2012.laptop.tsv").read_text().splitlines()[1]
        print(
            f"pipeline wall time {wall / 60:.1f} min; train rule {float(train.split()[0]) / 60:.1f} min "
            f"({args.cores} cores, {cpu_model()})"
        )
        print(
            f"training loop {loop_rate(results):.1f} tiles/s; bare network step (train_speed.py) "
            f"{before:.1f} tiles/s before the run, {bare_step_rate():.1f} after"
        )
    print(describe(json.loads((results / "isbi2012" / "evaluation" / "laptop" / "summary.json").read_text())))


if __name__ == "__main__":
    main()
