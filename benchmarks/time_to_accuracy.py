"""Time to accuracy of candidate training settings: validation V_rand against training time and FLOPs.

    python benchmarks/time_to_accuracy.py [--results results_time_to_accuracy] [--data DIR]
                                          [--candidates laptop group_norm one_cycle large_tiles border_sampling]
                                          [--iterations 3000] [--validate-every 500] [--cores 2]
                                          [--held-out]

Trains each candidate through the workflow (``snakemake`` with config/config.yaml and an overlay that adds
the candidate as preset ``tta_<name>``: the laptop preset with the candidate's changes, ``--iterations``
steps on a cosine schedule, validated every ``--validate-every`` steps) into one results folder, one after
the other on the same machine, so that the settings compare as curves measured in one run. A finished
candidate is not trained again (snakemake sees its model); delete its model folder to retrain.

Per candidate it reads the training curve (``seconds``: the training steps' wall time, validation
excluded; ``v_rand_best``: the validation sections' V_rand at the best of the evaluation's thresholds,
which moves less from step to step than V_rand at 0.5) and prints:

- FLOPs per step (torch's FlopCounterMode, forward and backward of the batch), and the loop's achieved
  GFLOP/s against the CPU's nominal peak (``cpu_peak_gflops``: how it is derived is in its docstring);
- the bare step's rate (train_speed.py's ``measure``), measured after all training, uncontended;
- the first training time and FLOPs at which validation reached each of ``MILESTONES``, and the best.

With ``--held-out`` each candidate's model is then evaluated through the workflow as the default run evaluates
(the evaluate rule: TTA as the model chose it, every threshold chosen on the validation sections 20-24) and the
table adds its held-out scores on sections 25-29: V_rand and the warping error of the thresholded probabilities,
and V_rand of the cells the segment stage writes.

Writes ``time_to_accuracy.csv`` (one row per validation) and ``time_to_accuracy.png`` (V_rand against
seconds and against TFLOPs) into the results folder.
"""

import argparse
import copy
import csv
import json
from pathlib import Path

import torch
from shipped_workflow import ISBI_DATA, REPO, cpu_model, run_shipped, shipped_config
from train_speed import measure, step_flops
from unet_pipeline.core.figures import pyplot
from unet_pipeline.models.devices import cpu_has_bf16
from unet_pipeline.models.unet import UNetConfig, build_model

# The laptop preset's changes per candidate (issue 37): normalisation layers with a larger learning rate (batch
# norm predicts with running statistics, so its output does not depend on the tile; group norm normalises per
# tile, nnU-Net's way), a one-cycle shape (warm-up to a 3x higher peak, then cosine down), larger tiles at fewer
# per batch (more output pixels per FLOP: the unpadded border is a smaller share), and half the samples drawn by
# their loss weight sum (``batches.sample_chances``: tiles with gaps between touching cells more often); and the
# laptop preset from other initial weights and batches (seed_1, seed_2), which shows how far one seed decides.
CANDIDATES = {
    "laptop": {},
    "group_norm": {"model": {"norm": "group"}, "training": {"learning_rate": 0.003, "warmup": 200}},
    "batch_norm": {"model": {"norm": "batch"}, "training": {"learning_rate": 0.003, "warmup": 200}},
    "one_cycle": {"training": {"learning_rate": 0.003, "warmup": 300}},
    "large_tiles": {"input_size": 284, "training": {"batch_size": 2}},
    "border_sampling": {"training": {"border_sampling": 0.5}},
    "seed_1": {"training": {"seed": 1}},
    "seed_2": {"training": {"seed": 2}},
}
MILESTONES = (0.95, 0.96, 0.97)


def merged(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` applied key by key into nested dicts."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        out[key] = merged(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def candidate_preset(name: str, iterations: int, validate_every: int) -> dict:
    laptop = shipped_config()["presets"]["laptop"]
    run = {"training": {"iterations": iterations, "validate_every": validate_every, "schedule": "cosine"}}
    return merged(merged(laptop, CANDIDATES[name]), run)


def cpu_peak_gflops(bf16: bool) -> float:
    """The CPU's nominal peak GFLOP/s on the threads torch uses: threads x clock (``cpu MHz`` of
    /proc/cpuinfo, the nominal clock a VM reports; boost may be higher) x FLOPs per cycle. FLOPs per cycle
    per core: two FMA pipes x 8 float32 lanes x 2 (multiply and add) = 32 with AVX2 and FMA (AMD Zen 2 to 4,
    which runs AVX-512 as two 256-bit halves; Intel since Haswell); 64 on Intel with AVX-512; bf16 dot
    products (avx512_bf16) double it."""
    info = Path("/proc/cpuinfo").read_text()
    mhz = float(next(line.split(":")[1] for line in info.splitlines() if line.startswith("cpu MHz")))
    flags = set(next(line.split(":")[1] for line in info.splitlines() if line.startswith("flags")).split())
    per_cycle = 64 if "avx512f" in flags and "GenuineIntel" in info else 32 if {"avx2", "fma"} <= flags else 8
    return torch.get_num_threads() * mhz / 1e3 * per_cycle * (2 if bf16 else 1)


def candidate_run(name: str, preset: dict, results: Path, data: Path, cores: int, target: Path):
    """Make ``target`` of ``preset`` as preset ``tta_<name>`` through snakemake; exits naming a failed run."""
    overlay = {
        "results": str(results),
        "datasets": {"isbi2012": {"base": str(data)}, "isbi2012_test": {"base": str(data)}},
        "presets": {f"tta_{name}": preset},
    }
    finished = run_shipped(
        overlay, f"tta_{name}", cores, targets=[target], options=["--rerun-triggers", "mtime", "--rerun-incomplete"]
    )
    if finished.returncode != 0:
        raise SystemExit(f"{name}: snakemake failed:\n{finished.stderr[-3000:]}")


def train_candidate(name: str, preset: dict, results: Path, data: Path, cores: int) -> list[dict]:
    """Train ``preset`` as ``tta_<name>`` through snakemake; its training curve's rows."""
    model = results / "isbi2012" / "models" / f"tta_{name}" / "model.pt"
    candidate_run(name, preset, results, data, cores, model)
    with open(model.parent / "training_curve.csv") as handle:
        return list(csv.DictReader(handle))


def held_out(name: str, preset: dict, results: Path, data: Path, cores: int) -> str:
    """The evaluate rule's held-out scores of candidate ``name`` (settings chosen on validation), as columns."""
    summary = results / "isbi2012" / "evaluation" / f"tta_{name}" / "summary.json"
    candidate_run(name, preset, results, data, cores, summary)
    found = json.loads(summary.read_text())
    v_rand, warping = found["metrics"]["v_rand"], found["metrics"]["warping_error"]
    cells = found["cells"]["metrics"]["v_rand"] if found.get("cells") else {"value": float("nan"), "threshold": "-"}
    return (
        f" {v_rand['value']:.4f} ({v_rand['threshold']}) {warping['value']:.4f} ({warping['threshold']})"
        f" {cells['value']:.4f} ({cells['threshold']})"
    )


def curve_points(rows: list[dict], flops_per_step: int) -> list[dict]:
    """Each validation with the training seconds and FLOPs spent before it (the last train row at its step)."""
    points, seconds = [], 0.0
    for row in rows:
        if row["split"] == "train":
            seconds = float(row["seconds"])
        elif row["v_rand_best"]:
            step = int(row["step"])
            points.append(
                {
                    "step": step,
                    "seconds": seconds,
                    "tflop": step * flops_per_step / 1e12,
                    "v_rand": float(row["v_rand"]),
                    "v_rand_best": float(row["v_rand_best"]),
                }
            )
    return points


def reached(points: list[dict], level: float) -> str:
    first = next((p for p in points if p["v_rand_best"] >= level), None)
    return f"{first['seconds']:6.0f} s {first['tflop']:6.0f} TF" if first else f"{'not reached':>17s}"


def plot(curves: dict, path: Path) -> None:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for name, points in curves.items():
        left.plot([p["seconds"] for p in points], [p["v_rand_best"] for p in points], "o-", label=name)
        right.plot([p["tflop"] for p in points], [p["v_rand_best"] for p in points], "o-", label=name)
    left.set(xlabel="training seconds (validation excluded)", ylabel="validation V_rand (best threshold)")
    right.set(xlabel="training TFLOPs (forward and backward)")
    left.legend()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=REPO / "results_time_to_accuracy")
    parser.add_argument("--data", type=Path, default=ISBI_DATA)
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--validate-every", type=int, default=500)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--held-out", action="store_true", help="evaluate each candidate on sections 25-29 too")
    args = parser.parse_args()
    results = args.results.resolve()
    results.mkdir(parents=True, exist_ok=True)
    presets = {name: candidate_preset(name, args.iterations, args.validate_every) for name in args.candidates}
    curves = {}
    for name, preset in presets.items():
        print(f"training {name} ...", flush=True)
        curves[name] = train_candidate(name, preset, results, args.data.resolve(), args.cores)
    torch.set_num_threads(args.cores)
    bf16 = cpu_has_bf16()
    peak = cpu_peak_gflops(bf16)
    print(f"\n{cpu_model()}, {args.cores} threads, {'bf16' if bf16 else 'float32'}; nominal peak {peak:.0f} GFLOP/s")
    header = f"{'candidate':24s} {'GF/step':>8s} {'loop GF/s':>9s} {'of peak':>7s} {'bare tiles/s':>12s} "
    header += "".join(f"{'V_rand >= ' + str(m):>19s}" for m in MILESTONES) + f" {'best':>7s}"
    print(header + (" | held-out V_rand, warping, cells V_rand (chosen setting)" if args.held_out else ""))
    table = []
    for name, preset in presets.items():
        flops = step_flops(
            build_model(UNetConfig(**preset["model"])), preset["training"]["batch_size"], preset["input_size"]
        )
        points = curve_points(curves[name], flops)
        curves[name] = points
        gflops = points[-1]["step"] * flops / points[-1]["seconds"] / 1e9
        bare = measure(preset, "bf16" if bf16 else "none", 100, torch.device("cpu"), "channels_last")["tiles_per_s"]
        best = max(p["v_rand_best"] for p in points)
        print(
            f"{name:24s} {flops / 1e9:8.1f} {gflops:9.1f} {gflops / peak:7.1%} {bare:12.1f} "
            + "".join(f"{reached(points, m):>19s}" for m in MILESTONES)
            + f" {best:7.4f}"
            + (held_out(name, preset, results, args.data.resolve(), args.cores) if args.held_out else ""),
            flush=True,
        )
        table += [{"candidate": name, **p} for p in points]
    with open(results / "time_to_accuracy.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    plot(curves, results / "time_to_accuracy.png")
    print(f"curves: {results / 'time_to_accuracy.png'}")


if __name__ == "__main__":
    main()
