"""Data-parallel training on one node: the launch, the process group and the few collectives training needs.

A run with ``processes > 1`` is started by ``torch.distributed.run`` (torchrun) from
inside the train rule: one process per GPU (``cuda:LOCAL_RANK``, NCCL), or per CPU
process group with gloo where no GPU is present (how the tests run it). torchrun
sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` and ends every process when one fails,
so a failed rank cannot leave the others waiting.
"""

from __future__ import annotations

import datetime
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist

from ..core.errors import PipelineError

log = logging.getLogger(__name__)
RELAY = logging.getLogger("torchrun")  # the ranks' own lines, as they wrote them

# Ranks other than 0 wait in a collective while rank 0 validates and writes checkpoints;
# NCCL's default of 10 minutes is too short for a long validation.
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 of 1 when not distributed)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: str = "cpu"  # where the collectives' tensors live: NCCL needs them on the rank's GPU

    @property
    def main(self) -> bool:
        """Whether this process validates and writes checkpoints and outputs."""
        return self.rank == 0


SINGLE = World()


def current_world() -> World:
    """The world torchrun describes in the environment, or a single process."""
    if "WORLD_SIZE" not in os.environ:
        return SINGLE
    return World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0")))


def rank_device(device: torch.device, world: World) -> torch.device:
    """One GPU per rank on a CUDA node; the CPU device as it is."""
    if world.size > 1 and device.type == "cuda":
        return torch.device("cuda", world.local_rank)
    return device


def join(world: World, device: torch.device) -> World:
    """Join the process group (NCCL between GPUs, gloo between CPU processes); returns the world on ``device``."""
    if world.size == 1:
        return world
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=COLLECTIVE_TIMEOUT)
    return replace(world, device=str(device))


def leave(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def mean_over_ranks(value: float, world: World) -> float:
    """The mean of one number over the ranks (the value itself in a single process)."""
    if world.size == 1:
        return value
    total = torch.tensor([value], dtype=torch.float64, device=world.device)
    dist.all_reduce(total)
    return float(total.item()) / world.size


def gather_objects(value, world: World) -> list:
    """Every rank's ``value``, in rank order (``[value]`` in a single process)."""
    if world.size == 1:
        return [value]
    gathered = [None] * world.size
    dist.all_gather_object(gathered, value)
    return gathered


def launch(module: str, spec: Path, processes: int, threads: int) -> None:
    """Run ``python -m module spec`` in ``processes`` processes with torchrun and wait for all of them.

    Args:
        module: the importable module whose ``__main__`` runs one rank.
        spec: the JSON file that tells each rank what to do.
        processes: how many ranks (one per GPU).
        threads: CPU threads per rank.

    Raises:
        PipelineError: when any rank failed (torchrun has then ended the others).
    """
    library = str(Path(__file__).resolve().parents[1])
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(filter(None, [library, os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": str(threads),
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    command += ["-m", module, str(spec)]
    log.info("starting %d training processes: %s", processes, " ".join(command))
    # The ranks' output goes through this process's logging, so it reaches the rule's log file.
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as ranks:
        for line in ranks.stdout:
            RELAY.info("%s", line.rstrip())
    if ranks.returncode != 0:
        raise PipelineError(
            f"distributed training ({processes} processes, {spec}) failed with exit code {ranks.returncode}; "
            "the failing rank's error is in the log above"
        )
