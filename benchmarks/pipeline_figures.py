"""The figures of one workflow run, read from its results folder (gpu_pipeline.sh prints them).

    python benchmarks/pipeline_figures.py RESULTS PRESET

Prints each rule's time and peak memory (its benchmark file), the predict stage's own time per volume
(the "wrote ... in N s" line of the rule's log, without start-up, model loading and tile choice), the
training loop's tiles/s (the median over the curve's log windows, validation excluded) and the held-out
scores of the training dataset (its evaluation summary). A figure whose file is missing (a rule that
failed or was cut short) is reported as missing; the others still print.
"""

import argparse
import csv
import json
import re
from pathlib import Path

WROTE = re.compile(r"wrote (\S+): ([\d.]+) megavoxels in ([\d.]+) s")


def rule_times(results: Path) -> None:
    for tsv in sorted((results / "benchmarks").glob("*/*.tsv")):
        row = next(csv.DictReader(tsv.open(), delimiter="\t"))
        print(f"rule {tsv.parent.name:16s} {tsv.stem:40s} {float(row['s']):8.1f} s, max RSS {row['max_rss']} MB")


def stage_times(results: Path) -> None:
    for log in sorted((results / "logs" / "predict").glob("*.log")):
        matches = list(WROTE.finditer(log.read_text()))
        if not matches:
            print(f"predict stage {log.stem:32s} no line '{WROTE.pattern}' in {log} (unfinished?)")
        for match in matches:
            megavoxels, seconds = float(match[2]), float(match[3])
            print(f"predict stage {log.stem:32s} {seconds:7.2f} s for {megavoxels:.1f} Mvoxel ({match[1]})")


def loop_rate(curve: Path) -> None:
    rates = sorted(float(row["tiles_per_s"]) for row in csv.DictReader(curve.open()) if row["split"] == "train")
    if rates:
        print(f"training loop: median {rates[len(rates) // 2]:.1f} tiles/s over {len(rates)} log windows")


def held_out(path: Path) -> None:
    summary = json.loads(path.read_text())
    scores = {name: round(metric["value"], 4) for name, metric in summary["metrics"].items()}
    print(f"held-out scores (sections {summary['sections']}, TTA {summary['tta']}):", json.dumps(scores))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path)
    parser.add_argument("preset")
    parser.add_argument("--dataset", default="isbi2012", help="the dataset the preset trained on and is scored on")
    args = parser.parse_args()
    rule_times(args.results)
    stage_times(args.results)
    folder = args.results / args.dataset
    for report, path in [
        (loop_rate, folder / "models" / args.preset / "training_curve.csv"),
        (held_out, folder / "evaluation" / args.preset / "summary.json"),
    ]:
        if path.exists():
            report(path)
        else:
            print(f"{report.__name__}: no {path}")


if __name__ == "__main__":
    main()
