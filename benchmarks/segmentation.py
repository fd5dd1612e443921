"""The segment stage's methods on the same probabilities: held-out ISBI scores of the cells, and their cost.

    python benchmarks/segmentation.py [--results /path/of/a/laptop_accuracy/run] [--workers 2] [--preset laptop]
                                      [--methods threshold quantile_linkage mean_linkage multicut]
                                      [--fragments '{"threshold": 0.5}' ...] [--search 0.3 0.5 ...]
                                      [--quantiles 0.02 0.1 ...]

Reads a finished run of ``laptop_accuracy.py`` (the default laptop model, its TTA prediction of
``isbi2012``, the evaluation summary), scores the cells of each method at every setting of its
search on the validation sections 20-24 and the held-out 25-29 exactly as the evaluate rule does
(``stages.evaluate.evaluate_cells``), and prints one table:

- first the probabilities thresholded (today's evaluation, from the run's summary);
- per method, the cells the segment stage writes: every score at the one setting chosen for V_rand
  on 20-24 (``stage`` rows);
- per method, each score at its own setting chosen on 20-24, as the challenge reported them
  (``own`` rows).

The ``s/section`` column is the time to segment one 512 x 512 section at the chosen setting (the median
of the 30 sections of the held-out volume ``isbi2012_test``), beside the predict rule's time per section
of that volume from the run's benchmark files. ``--fragments`` adds variants of the fragments' settings (JSON, over the
schema's defaults) for the agglomerating methods, and ``--quantiles`` other quantiles of ``quantile_linkage``;
each row also gives the validation sections' V_rand and warping error at the chosen setting, by which variants
are compared without reading the held-out ones. A run without a held-out prediction (``time_to_accuracy.py``'s)
has no time column.
"""

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

from shipped_workflow import cpu_model
from unet_pipeline.data import volume_store
from unet_pipeline.metrics.summary import stack_scores
from unet_pipeline.segmentation.fragments import FragmentOptions
from unet_pipeline.segmentation.methods import SegmentationOptions, segment_section
from unet_pipeline.stages.evaluate import evaluate_cells, evaluation_plan

SCORES = ("v_rand", "v_info", "rand_error", "warping_error", "pixel_error")


def stage_and_own(entry: dict) -> tuple[dict, dict]:
    """The scores at V_rand's chosen setting, and each at its own chosen setting (with the settings)."""
    at = entry["metrics"]["v_rand"]["threshold"]
    # keyed by the setting, or by its text where the entry was read back from the summary's JSON
    curves = {
        name: {str(key): value for key, value in entry["metrics"][name]["per_threshold"].items()} for name in SCORES
    }
    stage = {name: (curves[name][str(at)], at) for name in SCORES}
    own = {name: (entry["metrics"][name]["value"], entry["metrics"][name]["threshold"]) for name in SCORES}
    return stage, own


def seconds_per_section(prediction_path: Path, options: SegmentationOptions) -> str:
    """The median time to segment one section of a prediction store ("" where there is none)."""
    if not prediction_path.exists():
        return ""
    probabilities = volume_store.open_store(prediction_path)[volume_store.IMAGE_PATH]
    times = []
    for z in range(probabilities.shape[0]):
        section = volume_store.decode_probability(probabilities[z])
        start = time.perf_counter()
        segment_section(section, options)
        times.append(time.perf_counter() - start)
    return f"{statistics.median(times):.2f}"


def validation_scores(csv: Path, setting: float) -> dict:
    """The stack scores of the validation sections at ``setting``: what chose it, and what compares fragment
    variants without looking at the held-out sections."""
    import pandas as pd

    rows = pd.read_csv(csv).to_dict("records")
    return stack_scores([r for r in rows if r["split"] == "validation" and r["threshold"] == setting])


def row(label: str, scores: dict, cost: str = "") -> str:
    cells = " | ".join(f"{value:.4f} ({setting})" for value, setting in scores.values())
    return f"| {label} | {cells} | {cost} |"


def candidates(args) -> list[tuple[str, SegmentationOptions]]:
    """(label, options) of every method, fragment variant and quantile to score, the schema's defaults first."""
    variants = [{}] + [json.loads(text) for text in args.fragments]
    found = []
    for method in args.methods:
        for variant in variants if method != "threshold" else [{}]:
            options = SegmentationOptions(method=method, fragments=FragmentOptions(**variant))
            if args.search and method != "threshold":
                options = dataclasses.replace(options, search=tuple(args.search))
            label = method + (f" {json.dumps(variant)}" if variant else "")
            found.append((label, options))
            for quantile in args.quantiles if method == "quantile_linkage" else []:
                found.append((f"{label} quantile {quantile}", dataclasses.replace(options, quantile=quantile)))
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path(__file__).resolve().parents[1] / "results_laptop_accuracy")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=["threshold", "quantile_linkage", "mean_linkage", "multicut"])
    parser.add_argument("--fragments", nargs="*", default=[], help="JSON objects of fragment settings to try too")
    parser.add_argument("--search", nargs="+", type=float, help="edge thresholds to try (default: the schema's)")
    parser.add_argument("--quantiles", nargs="*", type=float, default=[], help="quantile_linkage: other quantiles")
    parser.add_argument("--preset", default="laptop", help="whose model's probabilities (a preset of the run)")
    args = parser.parse_args()
    run, preset = args.results.resolve(), args.preset
    prediction = run / "isbi2012" / "predictions" / f"{preset}.zarr"
    volume = run / "isbi2012" / "volume.zarr"
    held_out = run / "isbi2012_test" / "predictions" / f"{preset}.zarr"
    summary = json.loads((run / "isbi2012" / "evaluation" / preset / "summary.json").read_text())
    plan = evaluation_plan(volume_store.provenance(volume_store.open_store(volume)))
    # the predict rule's record (one job), or its shard jobs' (prediction.shards > 1)
    records = sorted((run / "benchmarks").glob(f"predict*/isbi2012_test.{preset}*.tsv"))
    predict_s = sum(float(path.read_text().splitlines()[1].split()[0]) for path in records) / 30
    predicted = f" (predict: {predict_s:.2f})" if records else ""
    print(f"{cpu_model()}; held-out sections {plan.sections}, settings chosen on {plan.threshold_sections}")
    print(f"| cells | {' | '.join(SCORES)} | s/section{predicted} |")
    print("|---|" + "---|" * (len(SCORES) + 1))
    probabilities = {"metrics": summary["metrics"]}
    stage, own = stage_and_own(probabilities)
    print(row("probabilities thresholded, at V_rand's threshold", stage))
    print(row("probabilities thresholded, each at its own threshold", own))
    for number, (label, options) in enumerate(candidates(args)):
        csv = run / f"segmentation_{number}_{options.method}.csv"
        entry = evaluate_cells(prediction, volume, plan, "binary", csv, options, args.workers)
        stage, own = stage_and_own(entry)
        chosen = options.with_setting(stage["v_rand"][1])
        seen = validation_scores(csv, chosen.setting)
        label += f" (validation: V_rand {seen['v_rand']:.4f}, warping {seen['warping_error']:.4f})"
        print(row(f"{label}: the stage's cells", stage, seconds_per_section(held_out, chosen)))
        print(row(f"{label}: each at its own setting", own))
        print(f"<!-- {label}: {json.dumps(dataclasses.asdict(options.fragments))} -->")


if __name__ == "__main__":
    main()
