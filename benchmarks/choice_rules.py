"""How rules would choose the cells' setting on the validation sections, and what each choice scores held out.

    python benchmarks/choice_rules.py RUN/isbi2012/evaluation/PRESET/cells.csv [...]
    python benchmarks/choice_rules.py --score RESULTS/DATASET/predictions/MODEL.zarr [...] --out FOLDER

Reads the per-section rows the evaluate rule (or ``segmentation.py``) writes: every setting of the search on the
validation and the test (held-out) sections. ``--score`` first makes such rows for finished predictions with the
schema's segmentation defaults (method, search, fragments), each against the ``volume.zarr`` of its dataset
(``RESULTS/DATASET/volume.zarr``, the workflow's layout), into ``--out``; a prediction whose dataset names the
same sections for validation and test, or has no test sections, is skipped. The rules:

- **coarse**: the best mean V_rand over the validation sections among 0.3, 0.4, ..., 0.9 (the evaluation's rule
  and search before ``segmentation.choice_window``);
- **mean**: the best mean V_rand at any setting of the rows (``choice_window`` 0);
- **median** (one section's merge of two large cells does not decide) and **pooled** pair counts (the V_rand of
  all sections' pixel pairs together);
- **window W**: the best mean V_rand averaged over the settings within W of it (``metrics.summary.smoothed``;
  the evaluation's rule, at the schema's ``choice_window``).

Per file, each rule's setting and its held-out V_rand; then each rule's mean held-out V_rand over the files, and
on how many it is above and below the coarse rule.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from unet_pipeline.data import volume_store
from unet_pipeline.metrics.scores import fscore
from unet_pipeline.metrics.summary import smoothed
from unet_pipeline.segmentation.methods import SegmentationOptions
from unet_pipeline.stages.evaluate import evaluate_cells, evaluation_plan

COARSE = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
WINDOWS = (0.05, 0.1)


def pooled(rows: pd.DataFrame) -> float:
    """V_rand of the summed pair counts: the F-score of split and merge precision, as the metrics compute it."""
    return fscore(rows.vrand_tp.sum(), rows.vrand_fp.sum(), rows.vrand_fn.sum())[2]


def rules(validation: pd.DataFrame) -> dict:
    """Each rule's score of each setting (pandas Series indexed by the setting)."""
    by_setting = validation.groupby("threshold")
    mean = by_setting.v_rand.mean()
    found = {
        "coarse": mean[mean.index.isin(COARSE)],
        "mean": mean,
        "median": by_setting.v_rand.median(),
        "pooled": by_setting.apply(pooled, include_groups=False),
    }
    for window in WINDOWS:
        found[f"window {window}"] = pd.Series(smoothed(mean.to_dict(), window))
    return found


def scored(predictions: list[Path], out: Path) -> dict:
    """Per-section rows of the cells of each prediction at every setting of the schema's search (``--score``):
    prediction -> its rows' CSV."""
    out.mkdir(parents=True, exist_ok=True)
    options, made = SegmentationOptions(), {}
    for number, prediction in enumerate(predictions):
        dataset = prediction.parent.parent
        volume = dataset / "volume.zarr"
        info = volume_store.provenance(volume_store.open_store(volume))
        plan = evaluation_plan(info)
        if not (plan.held_out and plan.threshold_split):  # the rules choose on validation, report on test
            print(f"skipped {prediction}: its validation sections do not hold the test sections out")
            continue
        csv = out / f"{number:02d}_{dataset.name}_{prediction.stem}.csv"
        evaluate_cells(prediction, volume, plan, info["labels"]["type"], csv, options, workers=2)
        made[prediction] = csv
    return made


def table_rows(paths: dict) -> dict:
    """Per rule, the held-out V_rand of its choice on each file (label -> CSV), printing a table row per file."""
    held = {}
    for label, path in paths.items():
        rows = pd.read_csv(path).round({"threshold": 6})
        held_out = rows[rows.split == "test"].groupby("threshold").v_rand.mean()
        chosen = {name: scores.idxmax() for name, scores in rules(rows[rows.split == "validation"]).items()}
        for name, value in chosen.items():
            held.setdefault(name, []).append(held_out[value])
        cells = " | ".join(f"{value:g} -> {held_out[value]:.4f}" for value in chosen.values())
        print(f"| {label} | {cells} | {held_out.idxmax():g} -> {held_out.max():.4f} |")
    return held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csvs", nargs="*", type=Path)
    parser.add_argument("--score", nargs="*", type=Path, default=[], help="prediction stores to score first")
    parser.add_argument("--out", type=Path, default=Path("choice_rules"), help="where --score writes its rows")
    args = parser.parse_args()
    paths = {**{path: path for path in args.csvs}, **scored(args.score, args.out)}
    names = ["coarse", "mean", "median", "pooled", *(f"window {window}" for window in WINDOWS)]
    print(f"| cells | {' | '.join(names)} | best held out |")
    print("|---|" + "---|" * (len(names) + 1))
    held = table_rows(paths)
    coarse = held["coarse"]
    summary = [
        f"{sum(v) / len(v):.4f} ({sum(a > c for a, c in zip(v, coarse))} / {sum(a < c for a, c in zip(v, coarse))})"
        for v in held.values()
    ]
    print(f"| mean held out (files above / below coarse) | {' | '.join(summary)} | |")


if __name__ == "__main__":
    main()
