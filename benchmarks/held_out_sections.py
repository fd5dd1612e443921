"""Held-out V_rand section by section: how much of a difference between two models one section decides.

    python benchmarks/held_out_sections.py RESULTS STACK REFERENCE PRESET [PRESET ...] [--cells]

RESULTS is a workflow results folder (``fine_tuning.py``'s ``RESULTS/workflow``), STACK a dataset in it and each
PRESET a model evaluated on it (``STACK/evaluation/PRESET/``). For each model the table gives the V_rand of
every test section at the threshold that the evaluation chose on the validation sections (the evaluate rule's
``sections.csv``; with ``--cells`` the segment rule's cells at their chosen setting, ``cells.csv``), then
their mean (the summary's held-out V_rand), and for the models after REFERENCE the per-section differences to it:
their mean, its standard error over sections, the mean without the section that lowers it most, and that
section's V_rand split and merge scores beside the reference's (a low merge score: cells joined).

A held-out V_rand of a few sections is the mean of a few numbers each of which one merge of two large cells can
lower by 0.1-0.3: the last columns show whether a difference between two models is one such event or holds on
every section.
"""

import argparse
import csv
import json
import math
from pathlib import Path

SCORES = ("v_rand", "v_rand_split", "v_rand_merge")  # columns of the evaluate rule's sections.csv and cells.csv


def chosen_rows(folder: Path, cells: bool) -> tuple[float, dict[int, dict]]:
    """The chosen threshold and, per test section, its row of scores at it, from one model's evaluation folder."""
    if not (folder / "summary.json").is_file():
        raise SystemExit(f"{folder}: no evaluation of that model on this stack (summary.json)")
    summary = json.loads((folder / "summary.json").read_text())
    if cells and "cells" not in summary:
        raise SystemExit(f"{folder}: this evaluation scored no cells (from before issue 34?); leave out --cells")
    metrics = summary["cells"]["metrics"] if cells else summary["metrics"]
    threshold = metrics["v_rand"]["threshold"]
    scores_csv = folder / ("cells.csv" if cells else "sections.csv")
    if not scores_csv.is_file():
        raise SystemExit(f"{scores_csv}: missing, though its summary.json is there")
    with open(scores_csv, newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] == summary["split"]]
    chosen = {int(row["section"]): row for row in rows if math.isclose(float(row["threshold"]), threshold)}
    if sorted(chosen) != sorted(summary["sections"]):
        raise SystemExit(f"{folder}: the rows at threshold {threshold} do not cover sections {summary['sections']}")
    return threshold, {section: {key: float(row[key]) for key in SCORES} for section, row in chosen.items()}


def paired(reference: dict[int, dict], rows: dict[int, dict]) -> str:
    """Mean per-section V_rand difference to the reference, its standard error, the mean without the worst
    section, and that section's split and merge scores beside the reference's."""
    sections = sorted(reference)
    differences = [rows[section]["v_rand"] - reference[section]["v_rand"] for section in sections]
    count = len(differences)
    mean = sum(differences) / count
    error = math.sqrt(sum((d - mean) ** 2 for d in differences) / (count - 1) / count) if count > 1 else math.nan
    worst = sections[min(range(count), key=differences.__getitem__)]
    rest = (sum(differences) - min(differences)) / (count - 1) if count > 1 else math.nan
    parts = " / ".join(f"{rows[worst][key]:.2f} ({reference[worst][key]:.2f})" for key in SCORES[1:])
    return f"{mean:+.4f} +- {error:.4f} | {rest:+.4f} (without {worst}) | {parts}"


def table(results: Path, stack: str, presets: list[str], cells: bool) -> str:
    scored = {preset: chosen_rows(results / stack / "evaluation" / preset, cells) for preset in presets}
    reference = scored[presets[0]][1]
    sections = sorted(reference)
    columns = ["model", "threshold", *map(str, sections), "mean", f"difference to {presets[0]}"]
    columns += ["without the worst section", "its split / merge V_rand (reference's)"]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for preset, (threshold, rows) in scored.items():
        values = " | ".join(f"{rows[section]['v_rand']:.4f}" for section in sections)
        mean = sum(row["v_rand"] for row in rows.values()) / len(rows)
        difference = paired(reference, rows) if preset != presets[0] else " | | "
        lines.append(f"| {preset} | {threshold:g} | {values} | {mean:.4f} | {difference} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path)
    parser.add_argument("stack")
    parser.add_argument("presets", nargs="+", metavar="PRESET", help="the reference model first")
    parser.add_argument("--cells", action="store_true", help="the segment rule's cells instead of thresholds")
    args = parser.parse_args()
    if len(args.presets) < 2:
        parser.error("name a reference model and at least one other")
    print(table(args.results, args.stack, args.presets, args.cells))


if __name__ == "__main__":
    main()
