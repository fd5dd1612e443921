"""Validation during training: the network scored on whole validation sections."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from ..data import volume_store
from ..inference.overlap_tile import TilePredictor
from ..metrics import validation_scores
from ..metrics.scores import FIXED_THRESHOLD, THRESHOLDS
from ..transforms.cells import cells_of

log = logging.getLogger(__name__)


def _section_scores(predictor: TilePredictor, volume, sections):
    """Per section of ``sections``, predicted whole: ``validation_scores`` at every threshold the evaluation tries
    (a list in the order of ``THRESHOLDS``), each section predicted and each threshold scored once."""
    image, labels = volume[volume_store.IMAGE_PATH], volume[volume_store.LABELS_PATH]
    label_type = volume_store.provenance(volume)["labels"]["type"]
    for z in sections:
        probability, truth = predictor.section(image[z]), cells_of(labels[z], label_type)
        yield [validation_scores(probability, truth, t) for t in THRESHOLDS]


def validate(predictor: TilePredictor, volume, sections) -> dict:
    """Misclassified fraction, V_rand (ISBI style) and foreground IoU at threshold 0.5, averaged over ``sections``,
    and ``v_rand_best``: the best over the evaluation's thresholds of the sections' mean V_rand, as the evaluation
    chooses its threshold (steadier from step to step than V_rand at 0.5, benchmarks/time_to_accuracy.py).

    Args:
        predictor: the network in eval mode with its tile settings.
        volume: the dataset's volume store (image, labels and their type).
        sections: the validation sections, predicted whole with the overlap-tile strategy.
    """
    per_section = list(_section_scores(predictor, volume, sections))
    fixed = [scores[THRESHOLDS.index(FIXED_THRESHOLD)] for scores in per_section]
    # nanmean: a section without true cells has no V_rand (metrics docstring) but still a pixel score.
    means = {name: float(np.nanmean([score[name] for score in fixed])) for name in fixed[0]}
    v_rand = np.array([[score["v_rand"] for score in scores] for scores in per_section], np.float64)
    return means | {"v_rand_best": _best_of(v_rand)}


def _best_of(by_threshold: np.ndarray) -> float:
    """The best over thresholds of the per-threshold means of a (sections, thresholds) array of V_rand (NaN:
    a section without cells); NaN when no section has cells."""
    means = [np.nanmean(column) if not np.isnan(column).all() else np.nan for column in by_threshold.T]
    return float(np.nanmax(means)) if not np.isnan(means).all() else float("nan")


def v_rand_by_threshold(predictor: TilePredictor, volume, sections) -> dict:
    """Threshold -> V_rand averaged over ``sections`` (as the evaluation forms the stack's V_rand), at every
    threshold the evaluation tries."""
    per_section = [[score["v_rand"] for score in scores] for scores in _section_scores(predictor, volume, sections)]
    return dict(zip(THRESHOLDS, np.nanmean(np.array(per_section, np.float64), axis=0).tolist()))


def tta_choice(predictor: TilePredictor, volume, sections) -> dict:
    """Whether test-time augmentation helps this network, decided on its validation sections.

    Each way (the predictor without TTA, and with it) is scored by its best V_rand over the evaluation's
    thresholds, as the evaluation will choose its threshold; TTA is chosen only where it scores higher.
    A network that is not equivariant to the flips and rotations (a short fine-tuning can leave one) loses
    by averaging them, and then predicts without.

    Returns:
        {"chosen": bool, "v_rand": {"without": best, "with": best}, "threshold": {...}, "sections": [...]}
    """
    best, threshold = {}, {}
    for name, tta in (("without", False), ("with", True)):
        curve = v_rand_by_threshold(dataclasses.replace(predictor, tta=tta), volume, sections)
        threshold[name] = max(curve, key=lambda t: (curve[t], -t))
        best[name] = curve[threshold[name]]
    chosen = best["with"] > best["without"]
    log.info(
        "test-time augmentation %s: validation V_rand %.6f with it (threshold %s), %.6f without (threshold %s)",
        "on" if chosen else "off",
        best["with"],
        threshold["with"],
        best["without"],
        threshold["without"],
    )
    return {"chosen": chosen, "v_rand": best, "threshold": threshold, "sections": list(sections)}
