"""TernausNet's Fig. 3 on ISBI 2012: validation IoU against training iterations, random vs ImageNet encoder.

    python benchmarks/ternausnet_init.py [--iterations 200] [--validate-every 25] [--samples 200]
                                         [--imagenet-weights vgg11-8a719046.pth] [--full]

Trains the shipped `ternausnet` preset through the workflow (`snakemake`) twice
on the ISBI training sections, once with random weights (LeCun uniform, as in
the paper's comparison) and once with the encoder from torchvision's ImageNet
VGG11, and reads the foreground IoU (the paper's Jaccard index) on the
validation sections from each training curve. The ImageNet weights are fetched
by the pipeline's download stage, or taken from `--imagenet-weights`; when
neither works (no internet, no file) that run is skipped and the output says
so. By default the schedule is shortened for a CPU (`--iterations`,
`--validate-every`, `--samples`); `--full` keeps the preset's own schedule (a GPU).

Writes ternausnet_init.csv (init, step, iou, v_rand) and ternausnet_init.png into
the results folder and prints the table.
"""

import argparse
import csv
import shutil
import time
from pathlib import Path

import yaml
from shipped_workflow import ISBI_DATA, REPO, run_shipped

VARIANTS = {"random": None, "imagenet": "imagenet"}


def preset_variant(shipped: dict, encoder_weights, args) -> dict:
    preset = {**shipped, "model": {**shipped["model"], "encoder_weights": encoder_weights}}
    if not args.full:
        preset["samples"] = args.samples
        preset["training"] = {
            **shipped["training"],
            "iterations": args.iterations,
            "validate_every": args.validate_every,
        }
    return preset


def run_variant(name: str, args, results: Path) -> tuple[list[dict], float] | None:
    """Train one variant through the workflow; its validation rows and the train rule's seconds, or None."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    weights = VARIANTS[name]
    if name == "imagenet" and args.imagenet_weights:
        weights = str(args.imagenet_weights.resolve())
    preset = f"ternausnet_{name}"
    data = str(args.data.resolve())
    overlay = {
        "results": str(results),
        "preset": preset,
        "presets": {preset: preset_variant(config["presets"]["ternausnet"], weights, args)},
        "datasets": {"isbi2012": {"base": data}, "isbi2012_test": {"base": data}},
    }
    model = results / "isbi2012" / "models" / preset / "model.pt"
    finished = run_shipped(overlay, preset, args.cores, targets=[model])
    if finished.returncode != 0:
        log = results / f"{preset}.snakemake.log"
        log.write_text(finished.stdout + finished.stderr)
        errors = [line for line in log.read_text().splitlines() if " ERROR " in line]
        print(f"{name}: not trained (the workflow failed; see {log}):", *errors[-1:])
        return None
    with open(results / "isbi2012" / "models" / preset / "training_curve.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] == "validation"]
    seconds = float(
        (results / "benchmarks" / "train" / f"isbi2012.{preset}.tsv").read_text().splitlines()[1].split("\t")[0]
    )
    return rows, seconds


def plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(6, 4), constrained_layout=True)
    for name, rows in curves.items():
        axis.plot([int(r["step"]) for r in rows], [float(r["iou"]) for r in rows], "o-", label=name)
    axis.set(
        xlabel="training iteration",
        ylabel="validation IoU (Jaccard), threshold 0.5",
        title="TernausNet on ISBI 2012: encoder initialisation",
    )
    axis.legend()
    fig.savefig(path, dpi=90)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ISBI_DATA)
    parser.add_argument("--results", type=Path, default=REPO / "results_ternausnet_init")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--validate-every", type=int, default=25)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--imagenet-weights", type=Path, help="local torchvision vgg11 state dict (else downloaded)")
    parser.add_argument("--full", action="store_true", help="the preset's own schedule (for a GPU)")
    args = parser.parse_args()
    results = args.results.resolve()
    if results.exists():
        shutil.rmtree(results)
    results.mkdir(parents=True)
    curves, started = {}, time.perf_counter()
    for name in VARIANTS:
        outcome = run_variant(name, args, results)
        if outcome is not None:
            curves[name], seconds = outcome
            print(f"{name}: trained in {seconds:.0f} s (train rule)")
    if not curves:
        raise SystemExit("no variant could be trained")
    with open(results / "ternausnet_init.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["init", "step", "iou", "v_rand"])
        for name, rows in curves.items():
            writer.writerows([name, row["step"], row["iou"], row["v_rand"]] for row in rows)
    plot(curves, results / "ternausnet_init.png")
    print(f"{'step':>6s} " + " ".join(f"{name + ' IoU':>14s}" for name in curves))
    for index, row in enumerate(next(iter(curves.values()))):
        print(f"{row['step']:>6s} " + " ".join(f"{float(rows[index]['iou']):14.4f}" for rows in curves.values()))
    missing = [name for name in VARIANTS if name not in curves]
    if missing:
        print(f"not run: {', '.join(missing)} (see above); give --imagenet-weights for the ImageNet encoder")
    print(
        f"total {time.perf_counter() - started:.0f} s; "
        f"{results / 'ternausnet_init.csv'}, {results / 'ternausnet_init.png'}"
    )


if __name__ == "__main__":
    main()
