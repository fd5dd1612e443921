"""Evaluation stage: ISBI 2012 scores of a prediction, per section and summarised, with figures.

Which sections: the dataset's ``test`` sections when it declares any, else its
``validation`` sections, else all of them. Sections are scored in parallel
worker processes (the watershed holds the GIL). See ``metrics`` for how each
score is computed.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from . import volume_store
from .errors import InputDataError
from .figures import pyplot
from .metrics import section_scores, summarise
from .volume_store import decode_probability

log = logging.getLogger(__name__)


def evaluation_sections(info: dict) -> tuple[str, list[int]]:
    """The split a dataset is evaluated on, and its sections."""
    for split in ("test", "validation"):
        if info["sections"][split]:
            return split, info["sections"][split]
    return "all", list(range(info["shape"][0]))


def _score_section(prediction_path: str, volume_path: str, section: int) -> list[dict]:
    probability = decode_probability(volume_store.open_store(prediction_path)[volume_store.IMAGE_PATH][section])
    labels = volume_store.open_store(volume_path)[volume_store.LABELS_PATH][section]
    return [{"section": section, **row} for row in section_scores(probability, labels)]


def evaluate(prediction_path, volume_path, sections_csv, summary_json, workers: int = 1) -> dict:
    """Score every evaluation section at every threshold; write the table (CSV) and the summary (JSON)."""
    import pandas as pd

    volume = volume_store.open_store(volume_path)
    info = volume_store.provenance(volume)
    if not info.get("labels"):
        raise InputDataError(f"{volume_path}: dataset {info['dataset']!r} has no labels to evaluate against")
    prediction = volume_store.open_store(prediction_path)
    prediction_info = volume_store.provenance(prediction)
    if list(prediction[volume_store.IMAGE_PATH].shape) != info["shape"]:
        raise InputDataError(f"{prediction_path}: prediction shape {prediction[volume_store.IMAGE_PATH].shape} differs from the volume {info['shape']}")
    split, sections = evaluation_sections(info)
    arguments = [(str(prediction_path), str(volume_path), section) for section in sections]
    if workers > 1 and len(sections) > 1:
        with ProcessPoolExecutor(min(workers, len(sections)), mp_context=get_context("fork")) as pool:
            per_section = list(pool.map(_score_section, *zip(*arguments)))
    else:
        per_section = [_score_section(*args) for args in arguments]
    rows = [row for section_rows in per_section for row in section_rows]
    table = pd.DataFrame(rows)
    table.to_csv(sections_csv, index=False, float_format="%.6f")
    model = prediction_info.get("model_metadata", {})
    summary = {
        "dataset": info["dataset"],
        "split": split,
        "sections": sections,
        "metrics": summarise(rows),
        "model": {"file": prediction_info.get("model"), "architecture": model.get("model"), "training": model.get("training"),
                  "training_data": model.get("data")},  # fmt: skip
        "checksums": {"image_pixel_sha256": info["image"]["pixel_sha256"], "labels_pixel_sha256": info["labels"]["pixel_sha256"]},
        "tta": prediction_info.get("tta"),
    }
    Path(summary_json).write_text(json.dumps(summary, indent=2) + "\n")
    best = summary["metrics"]
    log.info("%s (%s sections %s): V_rand %.4f, V_info %.4f, Rand error %.4f, pixel error %.4f, misclassified %.4f, "
             "IoU %.4f, Dice %.4f", info["dataset"], split, sections,
             *(best[name]["value"] for name in ("v_rand", "v_info", "rand_error", "pixel_error", "misclassified", "iou", "dice")))  # fmt: skip
    return summary


def plot_threshold_curves(summary: dict, path) -> None:
    """V_rand, V_info, the unthinned Rand F-score and the pixel F-score against the binarisation threshold."""
    plt = pyplot()
    fig, axis = plt.subplots(figsize=(6.5, 4.2), constrained_layout=True)
    metrics = summary["metrics"]
    curves = (("v_rand", "V_rand (thinned)"), ("v_info", "V_info (thinned)"), ("rand_fscore_unthinned", "Rand F-score, unthinned"),
              ("dice", "pixel F-score (Dice)"))  # fmt: skip
    for name, label in curves:
        curve = metrics[name]["per_threshold"]
        axis.plot([float(t) for t in curve], list(curve.values()), "o-", label=f"{label}: best {max(curve.values()):.4f}")
    axis.set(xlabel="threshold on the foreground probability", ylabel="score", ylim=(0, 1.01),
             title=f"{summary['dataset']}, {summary['split']} sections {summary['sections'][0]}-{summary['sections'][-1]}")  # fmt: skip
    axis.legend(loc="lower center")
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_overlays(prediction_path, volume_path, path, threshold: float = 0.5, count: int = 3) -> None:
    """Image with ground-truth membranes (green) and predicted membranes (magenta) for a few sections."""
    plt = pyplot()
    info = volume_store.provenance(volume_store.open_store(volume_path))
    volume = volume_store.open_store(volume_path)
    probabilities = volume_store.open_store(prediction_path)[volume_store.IMAGE_PATH]
    _, sections = evaluation_sections(info)
    sections = sections[:count]
    fig, axes = plt.subplots(1, len(sections), figsize=(5 * len(sections), 5.2), constrained_layout=True, squeeze=False)
    for axis, section in zip(axes[0], sections):
        image = volume[volume_store.IMAGE_PATH][section].astype(np.float32) / 255.0
        rgb = np.repeat(image[..., None], 3, axis=-1) * 0.8
        truth_membrane = volume[volume_store.LABELS_PATH][section] == 0
        predicted_membrane = decode_probability(probabilities[section]) <= threshold
        rgb[truth_membrane] = rgb[truth_membrane] * 0.4 + np.array([0.0, 0.6, 0.0])
        rgb[predicted_membrane] = rgb[predicted_membrane] * 0.5 + np.array([0.5, 0.0, 0.5])
        axis.imshow(np.clip(rgb, 0, 1))
        axis.set_title(f"section {section}: truth green, prediction magenta (t={threshold})")
        axis.set_axis_off()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_predictions(prediction_path, volume_path, path, count: int = 3) -> None:
    """Image and foreground probability side by side for a few sections (for data without labels too)."""
    plt = pyplot()
    volume = volume_store.open_store(volume_path)
    probabilities = volume_store.open_store(prediction_path)[volume_store.IMAGE_PATH]
    depth = probabilities.shape[0]
    sections = sorted({int(round(i)) for i in np.linspace(0, depth - 1, min(count, depth))})
    fig, axes = plt.subplots(2, len(sections), figsize=(4.5 * len(sections), 9), constrained_layout=True, squeeze=False)
    for column, section in enumerate(sections):
        axes[0, column].imshow(volume[volume_store.IMAGE_PATH][section], cmap="gray")
        axes[0, column].set_title(f"section {section}")
        axes[1, column].imshow(decode_probability(probabilities[section]), cmap="magma", vmin=0, vmax=1)
        axes[1, column].set_title("foreground probability")
        for axis in axes[:, column]:
            axis.set_axis_off()
    fig.savefig(path, dpi=80)
    plt.close(fig)
