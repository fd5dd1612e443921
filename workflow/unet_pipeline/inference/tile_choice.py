"""The prediction tile size when the config leaves it open: the fastest candidate within a memory budget.

Which tile is fastest depends on the device: on the 2-core CI CPUs larger tiles gain
little (``benchmarks/predict_speed.py``: 604-px tiles 7 % faster than 188 px at 2.6x the
memory), on a GPU they keep the device busy. So the choice is measured, once per
prediction, on the device the job runs on (``choose``): each candidate predicts one
batch of random tiles after a warm-up batch, and its throughput is the output chunk's
pixels over the time of the tiles the chunk needs (a step that does not divide the
chunk pays for the tiles that stick out). Candidates are tried from small to large and
stop at the first over the budget. The smallest tile within ``TOLERANCE`` of the best
wins: nearly as fast, less memory, and no flip-flopping on timing noise.

Candidates: the training tile and, for unpadded networks, the smallest legal tiles
whose step is the output chunk's size divided by 1, 2, 4 or 8 (no wasted tiles). An
unpadded network's output does not depend on the tile (``overlap_tile``), so the choice
changes speed and memory, not the result: to float32 rounding on the CPU, to bf16's or
TF32's on a GPU (``benchmarks/README.md``, "GPU"). A padded network (TernausNet) sees its
zero padding at every tile border, so its output would change with the tile: it keeps
its training tile, as does a network that normalises each tile by its own statistics
(``model.norm`` instance or group).
"""

from __future__ import annotations

import logging
import math
import resource
import time
from dataclasses import replace

import numpy as np
import torch

log = logging.getLogger(__name__)

TOLERANCE = 0.05  # throughput within 5 % of the best counts as the best
DIVISORS = (1, 2, 4, 8)


def candidates(geometry, training_size: int, chunk: tuple[int, int]) -> list[int]:
    """Input tile sizes worth measuring, ascending (the training tile alone where the output depends on the
    tile: padded networks, and those with per-tile statistics)."""
    if geometry.padded or geometry.per_tile_statistics:
        return [training_size]
    factor = 2 ** (geometry.levels - 1)
    sizes = {training_size}
    for divisor in DIVISORS:
        step = max(chunk) // divisor
        if step % factor == 0 and step >= geometry.tile_step(training_size):
            sizes.add(geometry.input_size_for_output(step))
    return sorted(sizes)


# Validation during training predicts whole sections with tiles that step this far (or the training tile's step
# where that is larger): on 2 CPU cores the laptop network predicted ISBI's 512^2 sections 1.7x faster with 348-px
# tiles (step 256) than with its 188-px training tiles, 768 x 1024 ones 1.3x, bit for bit the same
# (benchmarks/validation_tiles.py).
VALIDATION_STEP = 256


def validation_size(geometry, training_size: int, section: tuple[int, int]) -> int:
    """The input tile that validation predicts (y, x) ``section`` s with: the smallest legal tile whose step is
    ``VALIDATION_STEP``, or the section's larger side where that is smaller (rounded down to the pooling period),
    never below the training tile's step; the training tile itself where the output depends on the tile
    (``candidates``)."""
    if geometry.padded or geometry.per_tile_statistics:
        return training_size
    factor = 2 ** (geometry.levels - 1)
    step = max(min(VALIDATION_STEP, max(section) // factor * factor), geometry.tile_step(training_size))
    return training_size if step == geometry.tile_step(training_size) else geometry.input_size_for_output(step)


def _peak_bytes(device: torch.device) -> int:
    """Peak memory so far: allocated on the GPU (reset per candidate), resident for the process on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # ascending candidates: the last one's peak


def measure(predictor, input_size: int, chunk: tuple[int, int]) -> dict:
    """Seconds per tile, peak memory and chunk throughput (output pixels per second) of one tile size.

    Args:
        predictor: a ``TilePredictor`` (its batch size, device and precision are used).
        input_size: the tile size to measure (legal for ``predictor.geometry``).
        chunk: the output chunk (y, x) the tiles fill.
    """
    tiles = np.random.default_rng(0).integers(0, 256, (predictor.batch_size, input_size, input_size), np.uint8)
    candidate = replace(predictor, input_size=input_size)
    if predictor.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(predictor.device)
    candidate.tiles(tiles)  # warm-up: allocations, kernel selection
    started = time.perf_counter()
    candidate.tiles(tiles)
    per_tile = (time.perf_counter() - started) / len(tiles)
    step = predictor.geometry.tile_step(input_size)
    tiles_per_chunk = math.ceil(chunk[0] / step) * math.ceil(chunk[1] / step)
    rate = chunk[0] * chunk[1] / (tiles_per_chunk * per_tile)
    return {"input_size": input_size, "seconds_per_tile": per_tile, "peak_bytes": _peak_bytes(predictor.device)} | {
        "pixels_per_second": rate
    }


def memory_budget(device: torch.device, memory_mb: int | None) -> int:
    """Bytes a tile may take: 80 % of the GPU's free memory, or half the job's memory on the CPU."""
    if device.type == "cuda":
        return int(0.8 * torch.cuda.mem_get_info(device)[0])
    return int((memory_mb or 4096) * 2**20 // 2)  # the other half: windows, chunks in flight, the model


def choose(predictor, training_size: int, chunk: tuple[int, int], memory_mb: int | None = None) -> dict:
    """The tile size to predict with: the fastest candidate on the predictor's device within the memory budget.

    Args:
        predictor: a ``TilePredictor`` on the device the prediction runs on.
        training_size: the model's training tile (always a candidate; the only one where the output depends on
            the tile, ``candidates``).
        chunk: the output chunk (y, x).
        memory_mb: the job's memory (CPU budget: half of it); None: 4096.

    Returns:
        ``input_size``, ``measured`` (one dict per candidate tried, rates of one view of each tile) and
        ``budget_bytes``.
    """
    # test-time augmentation runs the same tile shapes 8 times (flips and quarter turns of square tiles): every
    # candidate's rate drops by the same factor, so one view ranks them at an eighth of the time
    predictor = replace(predictor, tta=False)
    sizes = candidates(predictor.geometry, training_size, chunk)
    budget = memory_budget(predictor.device, memory_mb)
    if len(sizes) == 1:  # nothing to compare: no measurement
        return {"input_size": sizes[0], "measured": [], "budget_bytes": budget}
    measured = []
    for size in sizes:
        result = measure(predictor, size, chunk)
        if measured and result["peak_bytes"] > budget:
            break
        measured.append(result)
    best = max(result["pixels_per_second"] for result in measured)
    chosen = next(r for r in measured if r["pixels_per_second"] >= (1 - TOLERANCE) * best)
    log.info(
        "tile size %d chosen on %s (%.2f Mpixel/s; measured %s)",
        chosen["input_size"],
        predictor.device,
        chosen["pixels_per_second"] / 1e6,
        ", ".join(f"{r['input_size']}: {r['pixels_per_second'] / 1e6:.2f}" for r in measured),
    )
    return {"input_size": chosen["input_size"], "measured": measured, "budget_bytes": budget}
