"""Evaluation stage: ISBI 2012 scores of a prediction, per section and summarised, with figures.

Protocol (``evaluation_plan``): a dataset with ``test`` sections is reported on
them, at each metric's operating threshold chosen on its ``validation``
sections (fixed at ``metrics.FIXED_THRESHOLD`` when it has none); nothing
selects on the test sections, so those are held-out scores (unless a section is
named for both: it then counts for each, and the summary says not held out). The best value over
thresholds on the test sections, which is what the challenge reported, is given
beside it and labelled as such. A dataset without test sections is reported on
its validation sections (else all), where threshold and score come from the same
sections: the summary says it is not held out. Sections are scored in parallel
worker processes (the watershed holds the GIL). See ``metrics`` for how each
score is computed.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from ..core.atomic import atomic_file
from ..core.errors import InputDataError
from ..core.figures import pyplot
from ..data import volume_store
from ..data.volume_store import decode_probability
from ..metrics import section_scores, summarise
from ..metrics.scores import threshold_row
from ..segmentation.methods import cells_at, cells_record, segment_section
from ..segmentation.proposal import proposal_of
from ..transforms.cells import cells_of

log = logging.getLogger(__name__)

HEADLINE = ("v_rand", "v_info", "rand_error", "pixel_error", "warping_error", "misclassified", "iou")


@dataclass(frozen=True)
class EvaluationPlan:
    """Which sections are reported, and which choose the operating thresholds (None: a fixed threshold)."""

    split: str
    sections: list[int]
    threshold_split: str | None
    threshold_sections: list[int]

    @property
    def held_out(self) -> bool:
        """True when nothing was selected on the reported sections: another split chose the settings, and no
        section is in both (a dataset may name the same sections for test and validation)."""
        shared = set(self.sections) & set(self.threshold_sections)
        return self.threshold_split != self.split and not shared

    def splits_of(self) -> dict[int, list[str]]:
        """Every section to score, with each split that names it: a section in both is scored once and its
        rows count for each, so the settings are chosen on every validation section and reported on every
        test section."""
        splits: dict[int, list[str]] = {}
        for split, sections in ((self.threshold_split, self.threshold_sections), (self.split, self.sections)):
            for section in sections:
                named = splits.setdefault(section, [])
                if split not in named:
                    named.append(split)
        return splits


def evaluation_plan(info: dict) -> EvaluationPlan:
    """The evaluation protocol of a dataset from its section splits (see the module docstring)."""
    sections = info["sections"]
    if sections["test"]:
        validation = sections["validation"]
        return EvaluationPlan("test", sections["test"], "validation" if validation else None, validation)
    if sections["validation"]:
        return EvaluationPlan("validation", sections["validation"], "validation", sections["validation"])
    every = list(range(info["shape"][0]))
    return EvaluationPlan("all", every, "all", every)


def _section_arrays(prediction_path: str, volume_path: str, section: int, label_type: str):
    """One section's probabilities (float32) and true cells."""
    probability = decode_probability(volume_store.open_store(prediction_path)[volume_store.IMAGE_PATH][section])
    labels = volume_store.open_store(volume_path)[volume_store.LABELS_PATH][section]
    return probability, cells_of(labels, label_type)


def _score_section(prediction_path: str, volume_path: str, section: int, label_type: str, _=None) -> list[dict]:
    """Every score of one section at every threshold of the probabilities."""
    probability, truth = _section_arrays(prediction_path, volume_path, section, label_type)
    return [{"section": section, **row} for row in section_scores(probability, truth)]


def _score_cells(prediction_path: str, volume_path: str, section: int, label_type: str, options) -> list[dict]:
    """Every score of one section's cells at every setting of the segmentation method (column ``threshold``).

    The cells are scored as their proposal (``segmentation.proposal``): the metrics see the cells as written.
    """
    probability, truth = _section_arrays(prediction_path, volume_path, section, label_type)
    cells = cells_at(probability, options)
    rows = []
    for value in options.settings:
        proposal = proposal_of(cells(value)).astype(np.float32)
        rows.append({"section": section, **threshold_row(truth, proposal, 0.5), "threshold": value})
    return rows


def _check_prediction_matches(prediction, prediction_info: dict, info: dict, prediction_path, volume_path) -> None:
    """Refuse a prediction of another volume: same shape is not enough, the input checksum must match."""
    shape = prediction[volume_store.IMAGE_PATH].shape
    if list(shape) != info["shape"]:
        raise InputDataError(f"{prediction_path}: prediction shape {shape} differs from the volume {info['shape']}")
    recorded = prediction_info.get("input_pixel_sha256")
    if recorded is None:
        raise InputDataError(
            f"{prediction_path}: records no input checksum (input_pixel_sha256), so it cannot be matched to "
            f"{volume_path}; predict the dataset's volume store with the predict rule"
        )
    if recorded != volume_store.image_id(info):
        raise InputDataError(
            f"{prediction_path}: predicts another volume (input pixel sha256 {recorded}) than {volume_path} "
            f"({volume_store.image_id(info)})"
        )


def score_sections(
    prediction_path, volume_path, plan: EvaluationPlan, label_type: str, workers: int = 1, cells=None
) -> list[dict]:
    """Every score of every section the plan names, each row with its split: at every threshold of the
    probabilities, or with ``cells`` (``SegmentationOptions``) of the cells at every setting of the method."""
    splits_of = plan.splits_of()
    score = _score_section if cells is None else _score_cells
    arguments = [(str(prediction_path), str(volume_path), section, label_type, cells) for section in sorted(splits_of)]
    if workers > 1 and len(arguments) > 1:
        with ProcessPoolExecutor(min(workers, len(arguments)), mp_context=get_context("fork")) as pool:
            per_section = list(pool.map(score, *zip(*arguments)))
    else:
        per_section = [score(*args) for args in arguments]
    return [{"split": split, **row} for rows in per_section for row in rows for split in splits_of[row["section"]]]


def _summarised(rows: list[dict], plan: EvaluationPlan, window: float = 0.0) -> dict:
    """``metrics.summarise`` of the reported rows, each setting chosen on the plan's choosing rows (averaged
    over the settings within ``window``)."""
    reported = [row for row in rows if row["split"] == plan.split]
    selecting = [row for row in rows if row["split"] == plan.threshold_split] if plan.threshold_split else None
    return summarise(reported, selecting, window)


def evaluate_cells(prediction_path, volume_path, plan, label_type, cells_csv, options, workers: int = 1) -> dict:
    """The cells' scores at every setting of the method (written to ``cells_csv``), each metric's setting
    chosen on the plan's validation sections as the thresholds are, but by its scores averaged over the settings
    within ``options.choice_window`` (``metrics.summary.smoothed``).

    Returns:
        The summary's ``cells`` entry: how the cells were made (``segmentation.methods.cells_record``) and
        ``metrics`` (``metrics.summarise``; a metric's ``threshold`` is the chosen value of the setting).
    """
    import pandas as pd

    rows = score_sections(prediction_path, volume_path, plan, label_type, workers, cells=options)
    with atomic_file(cells_csv) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False, float_format="%.12g")
    return {**cells_record(options), "metrics": _summarised(rows, plan, options.choice_window)}


def evaluate(
    prediction_path, volume_path, sections_csv, summary_json, workers: int = 1, cells=None, cells_csv=None
) -> dict:
    """Score the plan's sections at every threshold; write the table (CSV) and the summary (JSON).

    With ``cells`` (``SegmentationOptions``), the cells of that method are scored too, at every setting,
    into ``cells_csv`` (``evaluate_cells``).

    Returns:
        The summary: dataset, split and sections reported, where the thresholds came from, whether the
        scores are held out, every metric (``metrics.summarise``), the cells' (``cells``), model and data
        checksums.
    """
    import pandas as pd

    volume = volume_store.open_store(volume_path)
    info = volume_store.provenance(volume)
    if not info.get("labels"):
        raise InputDataError(f"{volume_path}: dataset {info['dataset']!r} has no labels to evaluate against")
    prediction = volume_store.open_store(prediction_path)
    prediction_info = volume_store.provenance(prediction)
    _check_prediction_matches(prediction, prediction_info, info, prediction_path, volume_path)
    plan = evaluation_plan(info)
    rows = score_sections(prediction_path, volume_path, plan, info["labels"]["type"], workers)
    with atomic_file(sections_csv) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False, float_format="%.12g")
    model = prediction_info.get("model_metadata", {})
    summary = {
        "dataset": info["dataset"],
        **asdict(plan),
        "held_out": plan.held_out,
        "metrics": _summarised(rows, plan),
        "model": {
            "file": prediction_info.get("model"),
            "architecture": model.get("model"),
            "training": model.get("training"),
            "training_data": model.get("data"),
        },
        "checksums": {
            "image_pixel_sha256": volume_store.image_id(info),
            "labels_pixel_sha256": info["labels"]["pixel_sha256"],
        },
        "tta": prediction_info.get("tta"),
    }
    if cells is not None:
        summary["cells"] = evaluate_cells(
            prediction_path, volume_path, plan, info["labels"]["type"], cells_csv, cells, workers
        )
    with atomic_file(summary_json) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    log.info("%s", describe(summary))
    return summary


def describe(summary: dict) -> str:
    """One line per headline metric: held-out value at the operating threshold and the best over thresholds."""
    chosen = summary["threshold_split"] or "fixed"
    held = "held out" if summary["held_out"] else "NOT held out"
    where = f"{summary['dataset']}, {summary['split']} sections {summary['sections']}"
    lines = [f"{where} ({held}; thresholds chosen on: {chosen}):"]
    lines += _metric_lines(summary["metrics"], "threshold")
    if "cells" in summary:
        cells = summary["cells"]
        window = cells.get("choice_window") or 0  # summaries before choice_window chose the best single setting
        around = f", its scores averaged within +-{window}" if window and summary["threshold_split"] else ""
        lines.append(f"the cells ({cells['method']}; {cells['tuned']} chosen on: {chosen}{around}):")
        lines += _metric_lines(cells["metrics"], cells["tuned"])
    tta = (summary["model"].get("training") or {}).get("tta")
    if tta:
        lines.append(
            f"  test-time augmentation {'on' if summary['tta'] else 'off'}; the model's validation chose "
            f"{'it' if tta['chosen'] else 'none'} (V_rand {tta['v_rand']['with']:.6f} with, "
            f"{tta['v_rand']['without']:.6f} without)"
        )
    tuned = (summary["model"].get("training") or {}).get("fine_tuning")
    if tuned:
        lines.append(
            f"  fine-tuned from {summary['model']['training']['init_from']['path']}: validation V_rand (best threshold, "
            f"no TTA) {tuned['zero_shot_v_rand']:.4f} zero-shot, {tuned['best_v_rand']:.4f} best at step "
            f"{tuned['best_step']}, level from step {tuned['plateau_step']}"
            + ("; fine-tuning did not improve on the starting model" if tuned["best_step"] == 0 else "")
            + (f" ({tuned['verdict']}: {tuned['next_step']})" if tuned.get("next_step") else "")
        )
    return "\n".join(lines)


def _metric_lines(metrics: dict, setting: str) -> list[str]:
    """One line per headline metric: the value at its operating setting, and the best over settings."""
    lines = []
    for name in HEADLINE:
        metric, best = metrics[name], metrics[name]["best_over_thresholds"]
        lines.append(
            f"  {name:14s} {metric['value']:.6f} at {setting} {metric['threshold']}   "
            f"(best over {setting}s {best['value']:.6f} at {best['threshold']})"
        )
    return lines


HEADLINE_NAMES = {
    "v_rand": "V_rand",
    "v_info": "V_info",
    "rand_error": "Rand error",
    "pixel_error": "pixel error",
    "warping_error": "warping error",
}


def headline_table(summaries: list[dict]):
    """The report's front-page table: the challenge's five scores (rows) of each evaluated dataset and model, for
    the probabilities thresholded and for the cells the segment stage writes (columns).

    Scores are rows so that the table stays narrow beside the rule graph however many datasets there are. A
    cell reads "value at its setting (best over settings)": the threshold on the probabilities, or the setting
    of the cells' method.

    Returns:
        A pandas DataFrame: column ``score`` (``scored sections``, then the scores), one column per dataset,
        model and what made the proposal.
    """
    import pandas as pd

    columns = {"score": ["scored sections", *HEADLINE_NAMES.values()]}
    for summary in summaries:
        sections = summary["sections"]
        held = "held out" if summary["held_out"] else "settings chosen on these sections"
        scored = f"{summary['split']} {sections[0]}-{sections[-1]} ({held})"
        name = f"{summary['dataset']} / {Path(summary['model']['file'] or '?').parent.name}"
        columns[f"{name}: threshold on p"] = [scored, *_score_strings(summary["metrics"])]
        if "cells" in summary:
            cells = summary["cells"]
            columns[f"{name}: cells, {cells['method']} ({cells['tuned']})"] = [
                scored,
                *_score_strings(cells["metrics"]),
            ]
    return pd.DataFrame(columns)


def _score_strings(metrics: dict) -> list[str]:
    """ "value at setting (best value)" of each headline score."""
    return [
        f"{metrics[name]['value']:.6f} at {metrics[name]['threshold']} "
        f"(best {metrics[name]['best_over_thresholds']['value']:.6f})"
        for name in HEADLINE_NAMES
    ]


def write_headline_table(summary_paths, csv_path) -> None:
    """``headline_table`` of the summary JSON files, written as CSV (atomically)."""
    summaries = []
    for path in summary_paths:
        try:
            summaries.append(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as error:
            raise InputDataError(f"{path}: not a readable evaluation summary ({error})") from error
    with atomic_file(csv_path) as tmp:
        headline_table(summaries).to_csv(tmp, index=False)


def plot_threshold_curves(summary: dict, path) -> None:
    """The stack scores against the binarisation threshold: F-scores left, the warping error right."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2), constrained_layout=True)
    metrics = summary["metrics"]
    curves = (
        ("v_rand", "V_rand", False),
        ("v_info", "V_info", False),
        ("rand_error", "1 - Rand error (Table 1)", True),
        ("pixel_error", "1 - pixel error", True),
    )
    for name, label, complement in curves:
        curve = metrics[name]["per_threshold"]
        values = [1.0 - value if complement else value for value in curve.values()]
        left.plot([float(t) for t in curve], values, "o-", label=f"{label}: best {np.nanmax(values):.4f}")
    warping = metrics["warping_error"]["per_threshold"]
    right.semilogy([float(t) for t in warping], list(warping.values()), "o-", color="tab:red")
    where = f"{summary['dataset']}, {summary['split']} sections {summary['sections'][0]}-{summary['sections'][-1]}"
    left.set(xlabel="threshold on the foreground probability", ylabel="score", ylim=(0, 1.01), title=where)
    left.legend(loc="lower center")
    best = metrics["warping_error"]["best_over_thresholds"]
    right.set(
        xlabel="threshold on the foreground probability",
        ylabel="warping error",
        title=f"warping error: best {best['value']:.6f} at {best['threshold']}",
    )
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_overlays(prediction_path, volume_path, path, threshold: float = 0.5, count: int = 3) -> None:
    """Image with ground-truth membranes (green) and predicted membranes (magenta) for a few sections."""
    plt = pyplot()
    info = volume_store.provenance(volume_store.open_store(volume_path))
    volume = volume_store.open_store(volume_path)
    probabilities = volume_store.open_store(prediction_path)[volume_store.IMAGE_PATH]
    sections = evaluation_plan(info).sections[:count]
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


def plot_cell_overlays(prediction_path, volume_path, path, options, count: int = 3) -> None:
    """Image with the true membranes (green) and the lines between the cells of ``options`` (magenta), and
    the cells in random colours beside it, for a few of the reported sections."""
    plt = pyplot()
    volume = volume_store.open_store(volume_path)
    probabilities = volume_store.open_store(prediction_path)[volume_store.IMAGE_PATH]
    sections = evaluation_plan(volume_store.provenance(volume)).sections[:count]
    fig, axes = plt.subplots(
        2, len(sections), figsize=(5 * len(sections), 10.4), constrained_layout=True, squeeze=False
    )
    colours = np.random.default_rng(0).uniform(0.2, 1.0, (2**16, 3))
    for column, section in enumerate(sections):
        cells = segment_section(decode_probability(probabilities[section]), options)
        image = volume[volume_store.IMAGE_PATH][section].astype(np.float32) / 255.0
        rgb = np.repeat(image[..., None], 3, axis=-1) * 0.8
        truth_membrane = volume[volume_store.LABELS_PATH][section] == 0
        rgb[truth_membrane] = rgb[truth_membrane] * 0.4 + np.array([0.0, 0.6, 0.0])
        rgb[cells == 0] = np.array([1.0, 0.0, 1.0])
        axes[0, column].imshow(np.clip(rgb, 0, 1))
        axes[0, column].set_title(f"section {section}: true membrane green, cell borders magenta")
        axes[1, column].imshow(np.where(cells[..., None] > 0, colours[cells % len(colours)], 0.0))
        axes[1, column].set_title(f"{int(cells.max())} cells")
        for axis in axes[:, column]:
            axis.set_axis_off()
    setting = f"{options.tuned} {options.setting}"
    fig.suptitle(f"cells: {options.method} at {setting}")
    fig.savefig(path, dpi=80)
    plt.close(fig)
