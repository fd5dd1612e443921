"""Score a probability stack against ISBI-style labels, as the organisers' Fiji code does.

    python -m unet_pipeline.metrics PROBABILITIES LABELS [--labels-foreground 255] [--json FILE] [--workers N]

PROBABILITIES: a float TIFF stack of foreground (cell interior) probabilities in
[0, 1] (the ISBI 2012 submission format), or a prediction store of the predict
rule (``results/{dataset}/predictions/{preset}.zarr``). LABELS: a TIFF stack where
``--labels-foreground`` marks cell interior and 0 the membranes. Prints JSON:
each score's best value over thresholds with its threshold, the per-threshold
table of the stack and the sections without true cells; ``--json`` also writes
it to a file. The definitions are in ``unet_pipeline.metrics``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from ..core.atomic import atomic_file
from ..core.errors import InputDataError
from ..transforms.cells import cells_of
from . import HIGHER_IS_BETTER, PARTS, section_scores
from .summary import best_threshold, per_threshold


def read_probabilities(path: Path) -> np.ndarray:
    """(z, y, x) float32 probabilities from a float TIFF stack or a prediction store; checked to lie in [0, 1]."""
    if not path.exists():
        raise InputDataError(f"{path}: no such file or prediction store")
    if path.is_dir():
        from ..data import volume_store

        try:
            stored = volume_store.open_store(path)[volume_store.IMAGE_PATH][:]
        except Exception as error:
            raise InputDataError(f"{path}: not a readable prediction store ({error})") from error
        probabilities = volume_store.decode_probability(stored)
    else:
        probabilities = _read_tiff(path)
        if probabilities.dtype.kind != "f":
            raise InputDataError(f"{path}: holds {probabilities.dtype} values, expected float probabilities in [0, 1]")
        probabilities = probabilities.astype(np.float32)
    if not np.isfinite(probabilities).all() or probabilities.min() < 0 or probabilities.max() > 1:
        raise InputDataError(f"{path}: probabilities must be finite and within [0, 1]")
    return probabilities


def read_labels(path: Path, foreground: int) -> np.ndarray:
    """(z, y, x) 0/1 labels from a TIFF stack whose only values are 0 and ``foreground``."""
    if not path.exists():
        raise InputDataError(f"{path}: no such label file")
    labels = _read_tiff(path)
    values = np.unique(labels)
    if not np.isin(values, (0, foreground)).all():
        raise InputDataError(
            f"{path}: label values {values[:8].tolist()} are not only 0 and {foreground} "
            "(set --labels-foreground to the value of cell interior)"
        )
    return (labels == foreground).astype(np.uint8)


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        stack = tifffile.imread(path)
    except Exception as error:
        raise InputDataError(f"{path}: not a readable TIFF ({error})") from error
    if stack.ndim == 2:
        stack = stack[None]
    if stack.ndim != 3:
        raise InputDataError(f"{path}: expected a (sections, y, x) stack, got shape {stack.shape}")
    return stack


def _score(probability: np.ndarray, labels: np.ndarray) -> list[dict]:
    return section_scores(probability, cells_of(labels))


def score_stack(probabilities: np.ndarray, labels: np.ndarray, workers: int = 1) -> list[dict]:
    """Rows of every section (with its index) at every threshold, sections scored in ``workers`` processes."""
    if workers > 1 and len(probabilities) > 1:
        with ProcessPoolExecutor(min(workers, len(probabilities)), mp_context=get_context("fork")) as pool:
            per_section = list(pool.map(_score, probabilities, labels))
    else:
        per_section = [_score(p, t) for p, t in zip(probabilities, labels)]
    return [{"section": z, **row} for z, rows in enumerate(per_section) for row in rows]


def report(rows: list[dict]) -> dict:
    """Best value and threshold of each score, the per-threshold table and the sections without cells."""
    table = per_threshold(rows)
    result = {}
    for name in [*HIGHER_IS_BETTER, *PARTS]:
        chosen = best_threshold(
            {t: s[PARTS.get(name, name)] for t, s in table.items()}, HIGHER_IS_BETTER[PARTS.get(name, name)]
        )
        result[name] = {"value": table[chosen][name], "threshold": chosen}
    result["per_threshold"] = [{"threshold": t, **scores} for t, scores in table.items()]
    result["sections_without_cells"] = sorted({row["section"] for row in rows if math.isnan(row["v_rand"])})
    return result


def _no_nan(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _no_nan(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_no_nan(item) for item in value]
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m unet_pipeline.metrics",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("probabilities", type=Path)
    parser.add_argument("labels", type=Path)
    parser.add_argument("--labels-foreground", type=int, default=255, help="label value of cell interior (255)")
    parser.add_argument("--json", type=Path, help="also write the result to this file")
    parser.add_argument("--workers", type=int, default=1, help="processes scoring sections in parallel (1)")
    args = parser.parse_args(argv)
    try:
        probabilities = read_probabilities(args.probabilities)
        labels = read_labels(args.labels, args.labels_foreground)
        if probabilities.shape != labels.shape:
            raise InputDataError(
                f"{args.probabilities}: shape {probabilities.shape} differs from {args.labels}: {labels.shape}"
            )
    except InputDataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = {"probabilities": str(args.probabilities), "labels": str(args.labels), "sections": len(labels)}
    result |= report(score_stack(probabilities, labels, args.workers))
    text = json.dumps(_no_nan(result), indent=2)
    if args.json:
        with atomic_file(args.json) as tmp:
            tmp.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
