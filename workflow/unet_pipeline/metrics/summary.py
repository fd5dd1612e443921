"""Stack scores per threshold from per-section rows, and the operating and best thresholds.

How each score of a stack is formed from its sections is Fiji's (package
docstring): V_rand, V_info and the warping error are means of per-section
values; the Table 1 Rand error, the pixel error and V_rand's split and merge
parts come from counts pooled over the sections.
"""

from __future__ import annotations

import math

from .scores import FIXED_THRESHOLD, fscore

# Scores chosen over thresholds: name -> True when higher is better.
HIGHER_IS_BETTER = {
    "v_rand": True,
    "v_info": True,
    "rand_error": False,
    "pixel_error": False,
    "warping_error": False,
    "misclassified": False,
    "iou": True,
}
# Parts reported at the threshold of the score they belong to.
PARTS = {
    "v_rand_split": "v_rand",
    "v_rand_merge": "v_rand",
    "v_info_split": "v_info",
    "v_info_merge": "v_info",
}


def _pooled(rows: list[dict], prefix: str) -> dict:
    return {key: sum(row[f"{prefix}_{key}"] for row in rows) for key in ("tp", "fp", "fn")}


def _mean(rows: list[dict], name: str) -> float:
    return sum(row[name] for row in rows) / len(rows) if rows else math.nan


def stack_scores(rows: list[dict]) -> dict:
    """Every score of a stack at one threshold, from the rows of its sections at that threshold.

    Sections without true cells (empty ground truth) have no V_rand, V_info or Rand error
    (NaN per section); the stack values of those scores are over the other sections.
    """
    cells = [row for row in rows if not math.isnan(row["v_rand"])]
    merge, split, _ = fscore(**_pooled(cells, "vrand")) if cells else (math.nan,) * 3
    pixels = {key: sum(row[f"pixel_{key}"] for row in rows) for key in ("tp", "fp", "fn", "tn")}
    total = sum(pixels.values())
    union = pixels["tp"] + pixels["fp"] + pixels["fn"]
    return {
        "v_rand": _mean(cells, "v_rand"),
        "v_rand_split": split,
        "v_rand_merge": merge,
        "v_info": _mean(cells, "v_info"),
        "v_info_split": _mean(cells, "v_info_split"),
        "v_info_merge": _mean(cells, "v_info_merge"),
        "rand_error": 1.0 - fscore(**_pooled(cells, "rand"))[2] if cells else math.nan,
        "pixel_error": 1.0 - fscore(pixels["tp"], pixels["fp"], pixels["fn"])[2],
        "warping_error": _mean(rows, "warping_error"),
        "misclassified": (pixels["fp"] + pixels["fn"]) / total,
        "iou": pixels["tp"] / union if union else 1.0,
    }


def per_threshold(rows: list[dict]) -> dict:
    """threshold -> ``stack_scores`` of the rows at that threshold, thresholds ascending."""
    thresholds = sorted({row["threshold"] for row in rows})
    return {t: stack_scores([row for row in rows if row["threshold"] == t]) for t in thresholds}


def best_threshold(values: dict, higher: bool):
    """The first threshold with the best value, as Fiji's loops find it (strictly better only; NaN never wins)."""
    best = next(iter(values))
    for threshold, value in values.items():
        current = values[best]
        if not math.isnan(value) and (math.isnan(current) or (value > current if higher else value < current)):
            best = threshold
    return best


def smoothed(values: dict, window: float) -> dict:
    """threshold -> the mean of ``values`` over the thresholds within ``window`` of it (NaN ignored; NaN where
    all are): a curve whose best point is also good around it. ``window`` 0 gives ``values`` back."""
    if window <= 0:
        return values
    near = {t: [values[u] for u in values if abs(u - t) <= window + 1e-9 and not math.isnan(values[u])] for t in values}
    return {t: sum(found) / len(found) if found else math.nan for t, found in near.items()}


def summarise(rows: list[dict], selection_rows: list[dict] | None = None, window: float = 0.0) -> dict:
    """Per score: the value at an operating threshold chosen on other sections, and the best over thresholds.

    Args:
        rows: per-section, per-threshold rows of the reported sections (``scores.section_scores``).
        selection_rows: the same for the sections that choose each score's operating threshold (the
            validation sections; the reported ones themselves when there are no others). None: the
            operating threshold is ``FIXED_THRESHOLD``.
        window: the operating threshold is the best of the selection rows' scores averaged over the
            thresholds within ``window`` of it (``smoothed``; 0: the best single threshold, Fiji's way).

    Returns:
        name -> {value (reported sections at the operating threshold), threshold, per_threshold,
        best_over_thresholds: {value, threshold}, the challenge's way, optimistic when no other
        sections chose the threshold}. The parts (``PARTS``) are given at their score's thresholds.
    """
    table = per_threshold(rows)
    choosing = per_threshold(selection_rows) if selection_rows else None
    summary = {}
    for name, higher in HIGHER_IS_BETTER.items():
        values = {t: scores[name] for t, scores in table.items()}
        operating = FIXED_THRESHOLD
        if choosing:
            operating = best_threshold(smoothed({t: scores[name] for t, scores in choosing.items()}, window), higher)
        best = best_threshold(values, higher)
        summary[name] = _entry(values, operating, best)
    for part, of in PARTS.items():
        values = {t: scores[part] for t, scores in table.items()}
        summary[part] = _entry(values, summary[of]["threshold"], summary[of]["best_over_thresholds"]["threshold"])
    return summary


def _entry(values: dict, operating, best) -> dict:
    return {
        "value": values[operating],
        "threshold": operating,
        "per_threshold": values,
        "best_over_thresholds": {"value": values[best], "threshold": best},
    }
