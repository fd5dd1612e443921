"""Fine-tuning the ISBI laptop model on a new labelled stack against training the laptop preset from scratch on it.

    python benchmarks/fine_tuning.py [--data DIR] [--results results_fine_tuning]
                                     [--transform blurred] [--iterations 1000 3000] [--learning-rate 3e-4]
                                     [--keep]

The new stack stands in for another microscope's data: ISBI 2012's training volume
with gamma 0.5 and a Gaussian blur of 1.5 px (``blurred``: brighter and less sharp),
or with gamma 0.5 and inverted contrast (``inverted``: membranes bright), with its
labels and the same split (train 0-19, validation 20-24, test 25-29). It is declared
as a dataset ``isbi_<transform>`` in a config overlay, and everything runs through the workflow
(``snakemake --cores 2``), as README "Fine-tuning the ISBI model on your own
labelled stack" describes:

- ``laptop``: the shipped default, trained on ISBI 2012 (the base), evaluated zero-shot;
- ``scratch``: the laptop preset trained from random weights on the new stack, with
  the laptop schedule (its iterations);
- ``finetune_N``: the laptop preset started from the base (``init_from``) and trained
  N iterations on the new stack (Adam, cosine, learning rate 3e-4 as in the README's
  example or --learning-rate; then named ``finetune_N_lrX``).

Printed per model: iterations, train-rule time, the held-out scores on the new
stack's test sections (thresholds chosen on its validation sections), and the
validation V_rand during training (``training_curve.csv``), so the iterations from
scratch needs to reach a fine-tuned model's score show. The base has seen the
original of the new stack's training sections (same tissue, other contrast); the
test sections are held out for every model.

``--keep`` keeps an existing results folder (for example that of
``laptop_accuracy.py``, whose base model is then reused instead of trained again).
"""

import argparse
import copy
import csv
import json
import shutil
import time
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage
from shipped_workflow import ISBI_DATA, REPO, cpu_model, run_shipped, shipped_config

TRANSFORMS = {
    "blurred": lambda image: ndimage.gaussian_filter(image**0.5, 1.5),
    "inverted": lambda image: 1 - image**0.5,
}
SHIPPED = shipped_config()
FINE_TUNING = {"optimizer": "adam", "learning_rate": 3e-4, "batch_size": 4, "schedule": "cosine"}


def fine_tuning_name(iterations: int, learning_rate: float) -> str:
    """``finetune_N`` at the README's learning rate, else ``finetune_N_lrX`` (no dots: names join paths)."""
    default = learning_rate == FINE_TUNING["learning_rate"]
    return f"finetune_{iterations}" if default else f"finetune_{iterations}_lr{learning_rate:.0e}"


def write_new_stack(data: Path, path: Path, transform: str) -> None:
    """The ISBI training volume changed by ``TRANSFORMS[transform]``, as a TIFF stack (kept if already there)."""
    image = tifffile.imread(data / "train-volume.tif").astype(np.float64) / 255
    change = TRANSFORMS[transform]
    stack = np.stack([np.rint(255 * np.clip(change(section), 0, 1)).astype(np.uint8) for section in image])
    if not (path.exists() and np.array_equal(tifffile.imread(path), stack)):  # a new file would rerun the workflow
        tifffile.imwrite(path, stack, photometric="minisblack")


def presets(results: Path, dataset: str, iterations: list[int], learning_rate: float) -> dict:
    """The from-scratch preset and one fine-tuning preset per iteration count, all laptop networks."""
    laptop = SHIPPED["presets"]["laptop"]
    scratch = copy.deepcopy(laptop) | {"train_dataset": dataset}
    chosen = {"scratch": scratch}
    for count in iterations:
        training = FINE_TUNING | {"iterations": count, "validate_every": max(count // 4, 1)}
        training["learning_rate"] = learning_rate
        chosen[fine_tuning_name(count, learning_rate)] = copy.deepcopy(laptop) | {
            "train_dataset": dataset,
            "init_from": str(results / "isbi2012" / "models" / "laptop" / "model.pt"),
            "training": laptop["training"] | training,
        }
    return chosen


def overlay(results: Path, data: Path, dataset: str, iterations: list[int], learning_rate: float) -> dict:
    isbi = SHIPPED["datasets"]["isbi2012"]
    new = {
        "image": {"source": str(results / f"{dataset}.tif")},
        "labels": {key: isbi["labels"][key] for key in ("type", "foreground", "background")}
        | {"source": str(data / "train-labels.tif")},
        "sections": isbi["sections"],
        "voxel_size": isbi["voxel_size"],
        "unit": isbi["unit"],
    }
    return {
        "results": str(results),
        "preset": "laptop",
        "datasets": {"isbi2012": {"base": str(data)}, "isbi2012_test": {"base": str(data)}, dataset: new},
        "presets": presets(results, dataset, iterations, learning_rate),
        "prediction": {"submission_tiff": []},
    }


def validation_curve(path: Path) -> str:
    rows = [row for row in csv.DictReader(path.open()) if row["split"] == "validation"]
    return ", ".join(f"{row['step']}: {float(row['v_rand']):.4f}" for row in rows)


def report(results: Path, dataset: str, preset: str) -> str:
    """One model's line: iterations, train time, held-out V_rand / Rand error / warping error, validation curve."""
    summary = json.loads((results / dataset / "evaluation" / preset / "summary.json").read_text())
    trainset = "isbi2012" if preset == "laptop" else dataset
    model = results / trainset / "models" / preset
    metadata = json.loads((model / "model.json").read_text())
    took = "the base, zero-shot"  # its train rule may have only reloaded a finished checkpoint here
    if preset != "laptop":
        benchmark = (results / "benchmarks" / "train" / f"{trainset}.{preset}.tsv").read_text()
        took = f"train rule {float(benchmark.splitlines()[1].split()[0]) / 60:5.1f} min"
    metrics = summary["metrics"]
    scores = ", ".join(
        f"{name} {metrics[name]['value']:.4f} (best {metrics[name]['best_over_thresholds']['value']:.4f})"
        for name in ("v_rand", "rand_error", "warping_error")
    )
    iterations = metadata["training"]["options"]["iterations"]
    lines = [f"{preset:14s} {iterations:6d} iterations, {took}; held out: {scores}"]
    if preset != "laptop":  # the base's curve is of ISBI 2012, not of the new stack
        lines.append(f"{'':14s} validation V_rand by step: {validation_curve(model / 'training_curve.csv')}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ISBI_DATA)
    parser.add_argument("--results", type=Path, default=REPO / "results_fine_tuning")
    parser.add_argument("--transform", choices=sorted(TRANSFORMS), default="blurred", help="how the new stack differs")
    parser.add_argument("--iterations", nargs="+", type=int, default=[1000, 3000])
    parser.add_argument("--learning-rate", type=float, default=FINE_TUNING["learning_rate"], help="of fine-tuning")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep an existing results folder (and its base model)")
    args = parser.parse_args()
    results, data = args.results.resolve(), args.data.resolve()
    if results.exists() and not args.keep:
        shutil.rmtree(results)
    results.mkdir(parents=True, exist_ok=True)
    dataset = f"isbi_{args.transform}"
    write_new_stack(data, results / f"{dataset}.tif", args.transform)
    chosen = ["laptop", "scratch", *(fine_tuning_name(count, args.learning_rate) for count in args.iterations)]
    targets = [results / dataset / "evaluation" / preset / "summary.json" for preset in chosen]
    start = time.perf_counter()
    finished = run_shipped(
        overlay(results, data, dataset, args.iterations, args.learning_rate), dataset, args.cores, targets
    )
    if finished.returncode != 0:
        raise SystemExit(f"the workflow failed:\n{finished.stdout[-3000:]}{finished.stderr[-3000:]}")
    print(f"workflow wall time {(time.perf_counter() - start) / 60:.1f} min ({args.cores} cores, {cpu_model()})")
    print(f"new stack: {dataset} (the ISBI training volume, {args.transform}); held-out test sections 25-29")
    for preset in chosen:
        print(report(results, dataset, preset))


if __name__ == "__main__":
    main()
