"""Training batches: what each step draws, and how it reaches the device without stalling the loop.

Several augmented sets (a preset trained on several datasets) are joined end to end (``Joined``), and each
sample is normalised by its own dataset's training sections (``SetNormalisation``), so that every dataset
reaches the network on the same scale whatever its microscope's gray values.

Batch ``step`` comes from ``numpy.random.default_rng([seed, step])`` alone (``batch_plan``):
``batch_size`` sample indices, then a quarter-turn count and a flip per sample. The indices are uniform,
or with ``border_sampling`` drawn partly in proportion to each sample's loss weight sum (``sample_chances``). Every rank of a
data-parallel run draws the whole batch and keeps its contiguous part. So a resumed run draws what
an uninterrupted one draws, whichever path below carries the batch.

Two paths, the same tensors bit for bit (``tests/training/test_batches.py``):

- ``DeviceBatches``: the augmented set lives on the training device, uint8 tiles and labels and
  float32 weights, when it fits in ``DEVICE_SHARE`` of that device's free memory (host memory for
  the CPU). A step gathers, flips, turns and normalises there; the host only draws a few random
  numbers, and nothing waits for the GPU. nnU-Net feeds its GPU from worker processes; here the
  whole set fits (2000 paper tiles are 2.2 GB), so there is nothing left to feed.
- ``PrefetchedBatches``: a set too large for that stays in Zarr; a pool of threads reads the next
  ``depth`` batches' samples while the network runs (Zarr's decompression and NumPy's copies release
  the GIL), in pinned memory on a CUDA host, copied without blocking; they are turned and normalised
  on the device as above.
"""

from __future__ import annotations

import collections
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.errors import PipelineError
from ..inference.overlap_tile import scaled_input
from . import distributed
from .distributed import World

log = logging.getLogger(__name__)

DEVICE_SHARE = 0.25  # of the device's free memory that the augmented set may take
ARRAYS = ("inputs", "labels", "weights")


@dataclass(frozen=True)
class BatchPlan:
    """This rank's part of one batch: sample indices, quarter turns (0-3) and flips along x."""

    indices: np.ndarray
    turns: np.ndarray
    flips: np.ndarray


def batch_plan(
    count: int, options, step: int, world: World = distributed.SINGLE, chances: np.ndarray | None = None
) -> BatchPlan:
    """What batch ``step`` draws from (``options.seed``, ``step``) out of ``count`` samples.

    Args:
        count: samples in the augmented set.
        options: the training options (``seed``, ``batch_size``, ``online_augmentation``).
        step: the optimiser step, from 0.
        world: this process's rank; every rank draws the whole batch and keeps rows
            ``rank * b`` to ``(rank + 1) * b``, b = batch / ranks.
        chances: (count,) float64 chances of each sample summing to 1 (``sample_chances``); None: uniform.

    Returns:
        The plan; without online augmentation no turns or flips (the draws are made all the same, so the
        indices do not depend on the setting).
    """
    rng = np.random.default_rng([options.seed, step])
    if chances is None:
        indices = rng.integers(count, size=options.batch_size)
    else:
        indices = rng.choice(count, size=options.batch_size, p=chances)
    turns, flips = rng.integers(4, size=len(indices)), rng.random(len(indices)) < 0.5
    if not options.online_augmentation:
        turns, flips = np.zeros_like(turns), np.zeros_like(flips)
    part = slice(world.rank * len(indices) // world.size, (world.rank + 1) * len(indices) // world.size)
    return BatchPlan(indices[part], turns[part], flips[part])


def sample_chances(weights, share: float) -> np.ndarray | None:
    """Each sample's chance per draw: ``share`` of the draws in proportion to the sample's loss weight sum, the
    rest uniform; None for ``share`` 0 (``batch_plan`` then draws integers, as before the option).

    The paper's weight map is highest in the narrow gaps between touching cells, where a missed membrane
    merges two cells, so a tile's weight sum counts how much of that it holds: on ISBI 2012 the laptop
    set's tile means range from 0.3 (inside one large cell) to 2.0. The uniform part keeps every tile
    in play.

    Args:
        weights: (n, out, out) weights: a tensor, or arrays read a row at a time (Zarr, ``Joined``).
        share: in [0, 1].

    Raises:
        PipelineError: weights that do not sum to a finite positive number.
    """
    if share == 0:
        return None
    if isinstance(weights, torch.Tensor):
        mass = weights.double().sum(dim=tuple(range(1, weights.ndim))).cpu().numpy()
    else:
        mass = np.array([np.asarray(weights[i], np.float64).sum() for i in range(weights.shape[0])])
    bad = np.flatnonzero(~np.isfinite(mass) | (mass < 0))
    if bad.size or mass.sum() <= 0:
        raise PipelineError(
            f"border_sampling: the loss weights must be finite and non-negative with a positive sum; "
            f"{int((~np.isfinite(mass)).sum())} samples are not finite (first bad sample: "
            f"{bad[0] if bad.size else None}), the sum is {mass.sum()}"
        )
    chances = (1 - share) / len(mass) + share * mass / mass.sum()
    log.info(
        "border sampling %.2f: a sample's chance per draw is %.2f to %.2f times the uniform one",
        share,
        chances.min() * len(mass),
        chances.max() * len(mass),
    )
    return chances / chances.sum()


class Joined:
    """Arrays (NumPy or Zarr) of several augmented sets end to end along the sample axis, read lazily: row
    ``offsets[k] + i`` is row ``i`` of set ``k``. Reads as ``batches`` reads an array: one row, or all."""

    def __init__(self, parts):
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [part.shape[0] for part in self.parts])
        self.shape = (int(self.offsets[-1]), *self.parts[0].shape[1:])
        self.dtype = self.parts[0].dtype
        self.nbytes = sum(part.nbytes for part in self.parts)

    def __getitem__(self, key):
        if key == slice(None):
            return np.concatenate([np.asarray(part[:]) for part in self.parts])
        index = int(key)
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.parts[part][index - int(self.offsets[part])]


class SetNormalisation:
    """The input normalisation of each sample: its set's ``mean`` and ``std`` (``overlap_tile.scaled_input``)."""

    def __init__(self, normalisations, offsets=(0,)):
        self.normalisations, self.offsets = list(normalisations), np.asarray(offsets)

    def of(self, indices, device: torch.device) -> dict:
        """The normalisation of a batch of samples ``indices``: one set's, or (n, 1, 1, 1) float32 tensors
        of each sample's set's."""
        if len(self.normalisations) == 1:  # as before sets were joined: scalars, bit for bit
            return self.normalisations[0]
        sets = np.searchsorted(self.offsets, np.asarray(indices), side="right") - 1
        chosen = [self.normalisations[k] for k in sets.tolist()]
        return {
            key: torch.tensor([n[key] for n in chosen], dtype=torch.float32, device=device).reshape(-1, 1, 1, 1)
            for key in ("mean", "std")
        }


def per_set(normalisation) -> SetNormalisation:
    """A ``SetNormalisation`` of one set's normalisation dict (or one already)."""
    return normalisation if isinstance(normalisation, SetNormalisation) else SetNormalisation([normalisation])


def host_rows(arrays, indices) -> list[np.ndarray]:
    """Rows ``indices`` of (inputs, labels, weights) arrays (NumPy or Zarr), stacked, as NumPy arrays."""
    return [np.stack([np.asarray(array[int(i)]) for i in indices]) for array in arrays]


def _turned(array: torch.Tensor, plan: BatchPlan, indices=None) -> torch.Tensor:
    """Rows of a (n, h, w) tensor, flipped along x and turned as ``np.rot90`` turns them, as ``plan`` says.

    ``indices``: which rows of ``array`` hold the plan's samples (default: the plan's sample indices; the
    read-ahead path has already picked them, in plan order).
    """
    rows = []
    picked = plan.indices if indices is None else indices
    for index, turn, flip in zip(np.asarray(picked).tolist(), plan.turns.tolist(), plan.flips.tolist()):
        row = array[index]
        rows.append(torch.rot90(row.flip(-1) if flip else row, turn, dims=(0, 1)))
    return torch.stack(rows)


def free_memory(device: torch.device) -> int:
    """Bytes free on ``device``: CUDA's free memory, or for the CPU the host's available memory (MemAvailable,
    which counts the page cache the kernel would give up; free pages where /proc/meminfo is missing)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class DeviceBatches:
    """The whole augmented set on the device; each batch gathered, turned and normalised there."""

    def __init__(self, arrays, options, normalisation, device: torch.device, world: World = distributed.SINGLE):
        self.tensors = [torch.from_numpy(np.asarray(array[:])).to(device) for array in arrays]
        self.options, self.normalisation, self.world = options, per_set(normalisation), world
        self.chances = sample_chances(self.tensors[2], options.border_sampling)

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(network input (n, 1, in, in) float32, labels (n, out, out) uint8, weights float32) of ``step``."""
        plan = batch_plan(len(self.tensors[0]), self.options, step, self.world, self.chances)
        inputs, labels, weights = (_turned(tensor, plan) for tensor in self.tensors)
        scale = self.normalisation.of(plan.indices, inputs.device)
        return scaled_input(inputs, scale, self.options.channels_last), labels, weights

    def close(self) -> None:
        self.tensors = []


class PrefetchedBatches:
    """Batches read from Zarr by a thread pool ``depth`` steps ahead of the loop, then copied to the device."""

    def __init__(self, arrays, options, normalisation, device: torch.device, world: World, threads: int = 2):
        self.arrays, self.options, self.normalisation, self.world = arrays, options, per_set(normalisation), world
        self.device, self.depth = device, max(2, 2 * threads)
        self.pool = ThreadPoolExecutor(max(threads, 1), thread_name_prefix="batches")
        self.pending: collections.deque = collections.deque()  # (step, plan, future), in step order
        self.count = arrays[0].shape[0]
        self.chances = sample_chances(arrays[2], options.border_sampling)

    def _read(self, plan: BatchPlan) -> list[torch.Tensor]:
        rows = [torch.from_numpy(part) for part in host_rows(self.arrays, plan.indices)]
        return [part.pin_memory() for part in rows] if self.device.type == "cuda" else rows

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """As ``DeviceBatches``; the first call at a step out of order (a resume) restarts the read-ahead."""
        if not self.pending or self.pending[0][0] != step:
            self.pending.clear()
        while len(self.pending) < self.depth:
            ahead = self.pending[-1][0] + 1 if self.pending else step
            plan = batch_plan(self.count, self.options, ahead, self.world, self.chances)
            self.pending.append((ahead, plan, self.pool.submit(self._read, plan)))
        _, plan, rows = self.pending.popleft()
        local = np.arange(len(plan.indices))  # the rows read are the plan's samples, in order
        inputs, labels, weights = (
            _turned(part.to(self.device, non_blocking=True), plan, local) for part in rows.result()
        )
        scale = self.normalisation.of(plan.indices, self.device)
        return scaled_input(inputs, scale, self.options.channels_last), labels, weights

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def batch_source(arrays, options, normalisation, device: torch.device, world: World, threads: int = 2):
    """``DeviceBatches`` when the set fits in ``DEVICE_SHARE`` of the device's free memory, else prefetched.

    Args:
        arrays: the augmented set's (inputs, labels, weights), Zarr or NumPy, or ``Joined`` sets.
        options: the training options.
        normalisation: the network's input ``mean`` and ``std`` (``overlap_tile.scaled_input``), or a
            ``SetNormalisation`` of joined sets.
        device: the training device.
        world: this process's rank.
        threads: the job's CPU threads (the read-ahead pool).

    Returns:
        A callable ``step -> (inputs, labels, weights)`` on ``device``, with ``close()``.
    """
    size, free = sum(array.nbytes for array in arrays), free_memory(device)
    if size <= DEVICE_SHARE * free:
        log.info("augmented set (%.2f GB) held on %s (%.1f GB free)", size / 1e9, device, free / 1e9)
        return DeviceBatches(arrays, options, normalisation, device, world)
    log.info(
        "augmented set (%.2f GB) read from Zarr ahead of the loop: over %.0f%% of %s's %.1f GB free",
        size / 1e9,
        100 * DEVICE_SHARE,
        device,
        free / 1e9,
    )
    return PrefetchedBatches(arrays, options, normalisation, device, world, threads)
