"""How three rules would choose the cells' setting on the validation sections, and what each choice scores held out.

    python benchmarks/choice_rules.py RUN/isbi2012/evaluation/PRESET/cells.csv [...]

Reads the per-section rows the evaluate rule (or ``segmentation.py``) writes: every setting of the search on the
validation and the test (held-out) sections. The evaluation chooses the setting of the best **mean** V_rand over
the validation sections; the others are the **median** (one section's merge of two large cells does not decide)
and the **pooled** pair counts (the V_rand of all sections' pixel pairs together). Only stored rows are read.
"""

from __future__ import annotations

import argparse

import pandas as pd
from unet_pipeline.metrics.scores import fscore


def pooled(rows: pd.DataFrame) -> float:
    """V_rand of the summed pair counts: the F-score of split and merge precision, as the metrics compute it."""
    return fscore(rows.vrand_tp.sum(), rows.vrand_fp.sum(), rows.vrand_fn.sum())[2]


def rules(validation: pd.DataFrame) -> dict:
    """Each rule's score of each setting."""
    by_setting = validation.groupby("threshold")
    return {
        "mean": by_setting.v_rand.mean(),
        "median": by_setting.v_rand.median(),
        "pooled": by_setting.apply(pooled, include_groups=False),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csvs", nargs="+")
    args = parser.parse_args()
    print("| cells | mean: setting -> held-out V_rand | median | pooled | best held out |")
    print("|---|---|---|---|---|")
    for path in args.csvs:
        rows = pd.read_csv(path)
        held_out = rows[rows.split == "test"].groupby("threshold").v_rand.mean()
        chosen = {name: scores.idxmax() for name, scores in rules(rows[rows.split == "validation"]).items()}
        cells = " | ".join(f"{value} -> {held_out[value]:.4f}" for value in chosen.values())
        print(f"| {path} | {cells} | {held_out.idxmax()} -> {held_out.max():.4f} |")


if __name__ == "__main__":
    main()
