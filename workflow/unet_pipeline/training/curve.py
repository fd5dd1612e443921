"""The training curve: one row per log step and validation, and its figure."""

from __future__ import annotations

import math

from ..core.figures import pyplot


def plot_curve(rows: list[dict], path) -> None:
    """Training loss (running mean) and validation scores against the step."""
    plt = pyplot()
    train = [row for row in rows if row["split"] == "train"]
    valid = [row for row in rows if row["split"] == "validation"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    if train:
        left.plot([row["step"] for row in train], [row["loss"] for row in train])
        left.set_yscale("log")
    left.set(xlabel="iteration", ylabel="weighted cross-entropy", title="training loss (running mean)")
    if valid:
        steps = [row["step"] for row in valid]
        right.plot(steps, [row["v_rand"] for row in valid], "o-", label="V_rand (threshold 0.5)")
        if any(row.get("v_rand_best") is not None for row in valid):
            best = [row.get("v_rand_best") for row in valid]
            right.plot(steps, [math.nan if v is None else v for v in best], "^-", label="V_rand (best threshold)")
        right.plot(steps, [1 - row["misclassified"] for row in valid], "s-", label="1 - misclassified fraction")
        right.legend()
    right.set(xlabel="iteration", title="validation")
    fig.savefig(path, dpi=90)
    plt.close(fig)


PLATEAU_TOLERANCE = 0.002  # a validation V_rand within this of the best: the curve has levelled off
GAIN_NOISE = 0.002  # a gain over zero-shot below this is within noise: the step-to-step jitter of validation V_rand


def validation_score(scores: dict) -> float:
    """The validation V_rand by which checkpoints compare: at the best of the evaluation's thresholds
    (``v_rand_best``), as the evaluation chooses its threshold, so the best checkpoint is the one the
    evaluation would score highest on these sections. V_rand at 0.5 moved by up to 0.1 between adjacent
    checkpoints whose best-threshold scores differed by 0.002 (benchmarks/README.md, issue 37). V_rand at 0.5
    where a validation has no ``v_rand_best`` (a checkpoint from before it was recorded)."""
    best = scores.get("v_rand_best")
    return scores["v_rand"] if best is None or math.isnan(best) else best


def validation_rank(scores: dict) -> tuple:
    """The order of validations: ``validation_score``, then fewer misclassified pixels."""
    return (validation_score(scores), -scores["misclassified"])


def fine_tuning_record(rows: list[dict]) -> dict | None:
    """What fine-tuning gained on the validation sections (``validation_score``, no TTA): the starting
    model's score before the first step (zero-shot), the best, the first validation step within
    ``PLATEAU_TOLERANCE`` of the best (where the curve levelled off), and the ``verdict`` with its ``next_step``
    (``fine_tuning_verdict``); None without a validation at step 0."""
    valid = [row for row in rows if row["split"] == "validation"]
    start = next((row for row in valid if row["step"] == 0), None)
    if start is None:
        return None
    best = max(valid, key=validation_rank)
    scores = [validation_score(row) for row in valid]
    plateau = next(row["step"] for row, v in zip(valid, scores) if v >= validation_score(best) - PLATEAU_TOLERANCE)
    record = {
        "zero_shot_v_rand": validation_score(start),
        "best_v_rand": validation_score(best),
        "best_step": best["step"],
    }
    record |= {"plateau_step": plateau, "gain_v_rand": record["best_v_rand"] - record["zero_shot_v_rand"]}
    return record | fine_tuning_verdict(record, scores)


def fine_tuning_verdict(record: dict, scores: list[float]) -> dict:
    """Whether fine-tuning paid, and what to do next, from its validation V_rand ``scores`` in step order.

    - ``no gain``: nothing beat the starting model (it is kept): train from scratch;
    - ``within noise``: the best is less than ``GAIN_NOISE`` above zero-shot: train from scratch;
    - ``still rising``: the last validation is the best and more than ``PLATEAU_TOLERANCE`` above the one before:
      more iterations would likely gain more;
    - ``gained``: it paid, and the curve levelled off before the end.
    """
    if record["best_step"] == 0:
        verdict, advice = "no gain", "train from scratch, or fine-tune with other settings"
    elif record["gain_v_rand"] < GAIN_NOISE:
        verdict, advice = "within noise", "train from scratch: fine-tuning gained less than the validation noise"
    elif len(scores) >= 3 and scores[-1] == max(scores) and scores[-1] - scores[-2] > PLATEAU_TOLERANCE:
        verdict, advice = "still rising", "train longer: the validation curve was still rising at its last point"
    else:
        verdict, advice = "gained", None
    return {"verdict": verdict, "next_step": advice}


# seconds: the training steps' wall time up to the row, validation excluded (time to accuracy)
CURVE_FIELDS = [
    "split",
    "step",
    "loss",
    "lr",
    "misclassified",
    "v_rand",
    "iou",
    "v_rand_best",
    "tiles_per_s",
    "seconds",
]


def curve_row(split: str, step: int, **values) -> dict:
    """One row of the training curve; the fields a split does not have are None."""
    return dict.fromkeys(CURVE_FIELDS) | {"split": split, "step": step, **values}
