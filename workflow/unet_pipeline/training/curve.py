"""The training curve: one row per log step and validation, and its figure."""

from __future__ import annotations

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
        right.plot(steps, [1 - row["misclassified"] for row in valid], "s-", label="1 - misclassified fraction")
        right.legend()
    right.set(xlabel="iteration", title="validation")
    fig.savefig(path, dpi=90)
    plt.close(fig)


CURVE_FIELDS = ["split", "step", "loss", "lr", "misclassified", "v_rand", "iou", "tiles_per_s"]


def curve_row(split: str, step: int, **values) -> dict:
    """One row of the training curve; the fields a split does not have are None."""
    return dict.fromkeys(CURVE_FIELDS) | {"split": split, "step": step, **values}
