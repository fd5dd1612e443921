"""The training loop: ``Trainer`` runs train and validation steps and checkpoints on the parts it is given."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.errors import PipelineError
from ..models.devices import autocast
from ..models.unet import UNetConfig, build_model
from . import distributed
from .checkpoints import load_checkpoint_file, save_checkpoint_file
from .curve import curve_row, validation_rank
from .distributed import World
from .loss import weighted_cross_entropy
from .optimisation import learning_rate
from .options import TrainingOptions

log = logging.getLogger(__name__)


@dataclass
class TrainingParts:
    """What a ``Trainer`` is given: the network, its optimiser, its batches, where it runs, how it validates.

    ``batches`` maps a step to that step's (network input, labels, weights) on ``device``
    (``batches.batch_source``); ``validate`` scores the model on the validation sections, or is None
    when there are none; ``precision`` is the autocast dtype (``devices.amp_dtype``);
    ``validate_at_start``: score the starting weights before the first step (fine-tuning: the starting
    model's zero-shot score, which the tuned weights must beat to be kept).
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    batches: Callable[[int], tuple]
    device: torch.device
    precision: torch.dtype | None = None
    world: World = distributed.SINGLE
    validate: Callable[[torch.nn.Module], dict] | None = None
    validate_at_start: bool = False


class Trainer:
    """One training run: ``train_step``, ``validation_step``, checkpoints, and a short ``run`` loop.

    Checkpoints: ``last.pt`` after every validation (resumed when its signature matches) and ``best.pt``
    whenever validation improves (``curve.validation_rank``: V_rand at the best threshold). The loss
    stays on the device between log steps: the loop waits for the GPU once per ``log_every`` steps,
    when it checks that every loss of the window is finite.
    """

    def __init__(self, parts: TrainingParts, options: TrainingOptions, checkpoints, signature: str):
        self.parts, self.options, self.signature = parts, options, signature
        self.forward = self._parallel_forward()
        self.checkpoints = Path(checkpoints)
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        self.step, self.rows, self.best = 0, [], None

    def _parallel_forward(self):
        """The module the training steps call: the model, wrapped for data parallelism and compiled as asked."""
        forward = self.model
        if self.world.size > 1:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index] if self.device.type == "cuda" else None
            forward = DistributedDataParallel(self.model, device_ids=device_ids)
            torch.manual_seed(int(np.random.default_rng([self.options.seed, self.world.rank]).integers(2**62)))
        return torch.compile(forward) if self.options.compile and self.device.type == "cuda" else forward

    @property
    def model(self) -> torch.nn.Module:
        return self.parts.model

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.parts.optimizer

    @property
    def device(self) -> torch.device:
        return self.parts.device

    @property
    def world(self) -> World:
        return self.parts.world

    @property
    def last_path(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.checkpoints / "best.pt"

    def load_checkpoint(self) -> None:
        """Continue from ``last.pt`` when it belongs to this configuration and not to a longer run."""
        if not self.last_path.exists():
            return
        saved = load_checkpoint_file(self.last_path)
        if saved["signature"] != self.signature or saved["step"] > self.options.iterations:
            log.info("ignoring %s: it belongs to another configuration or a longer run", self.last_path)
            return
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self._restore_rng(saved["rng"])
        self.step, self.rows, self.best = saved["step"], saved["rows"], saved["best"]
        log.info("resuming from %s at step %d", self.last_path, self.step)

    def _restore_rng(self, states: list) -> None:
        """This rank's (CPU, CUDA) RNG states of the checkpoint; those of another number of ranks do not apply."""
        if len(states) != self.world.size:
            log.warning(
                "%s holds the random states of %d processes, this run has %d: dropout draws differ from an "
                "uninterrupted run",
                self.last_path,
                len(states),
                self.world.size,
            )
            return
        cpu, cuda = states[self.world.rank]
        torch.set_rng_state(cpu)
        if self.device.type == "cuda" and cuda is not None:
            torch.cuda.set_rng_state(cuda, self.device)

    def save_checkpoint(self) -> None:
        """Everything a resumed run needs to end bit-identical to an uninterrupted one, written atomically.

        Every rank calls it (the RNG states of all ranks are gathered); rank 0 writes.
        """
        cuda_rng = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        rng = distributed.gather_objects((torch.get_rng_state(), cuda_rng), self.world)
        if not self.world.main:
            return
        payload = {"signature": self.signature, "step": self.step, "model": self.model.state_dict(), "rng": rng}
        payload |= {"optimizer": self.optimizer.state_dict(), "rows": self.rows, "best": self.best}
        save_checkpoint_file(payload, self.last_path)

    def train_step(self) -> torch.Tensor:
        """One optimiser step on the batch of ``self.step``; returns its loss, on the device (no wait for it)."""
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.options, self.step)
        inputs, labels, weights = self.parts.batches(self.step)
        with autocast(self.device, self.parts.precision):
            logits = self.forward(inputs)
        loss = weighted_cross_entropy(logits, labels, weights)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return loss.detach()

    def checked_mean(self, losses: list[torch.Tensor]) -> float:
        """The mean loss of the steps that ended at ``self.step``, over the ranks; the one wait for the device.

        Raises:
            PipelineError: naming the first step whose loss was not finite.
        """
        values = torch.stack(losses).double().cpu()
        mean = distributed.mean_over_ranks(float(values.mean()), self.world)
        if math.isfinite(mean):
            return mean
        bad = (~torch.isfinite(values)).nonzero().flatten().tolist()
        where = f"step {self.step - len(losses) + bad[0]}" if bad else f"steps before {self.step} on another rank"
        found = f"loss {values[bad[0]].item()}" if bad else "loss not finite"
        raise PipelineError(f"training diverged at {where} ({found}); lower the learning rate")

    def validation_step(self) -> None:
        """Score the validation sections, log them, and keep the weights when they are the best so far."""
        self.model.eval()
        scores = self.parts.validate(self.model)
        self.model.train()
        self.rows.append(curve_row("validation", self.step, **scores))
        at_best = f" ({scores['v_rand_best']:.4f} at the best threshold)" if "v_rand_best" in scores else ""
        log.info(
            "step %d: validation misclassified %.4f, V_rand %.4f%s",
            self.step,
            scores["misclassified"],
            scores["v_rand"],
            at_best,
        )
        if self.best is None or validation_rank(scores) > validation_rank(self.best):
            self.best = {"step": self.step, **scores}
            save_checkpoint_file(
                {"signature": self.signature, "step": self.step, "model": self.model.state_dict()}, self.best_path
            )

    def _log(self, losses: list[torch.Tensor], timed: tuple[float, int]) -> None:
        """One training row: the mean loss of ``losses``, the learning rate, the tiles per second since ``timed``
        (time, step): the last log or validation, so that validation time is not in the rate, and the training
        seconds so far (the last row's, which a resumed run carries on from, plus this window's)."""
        loss = self.checked_mean(losses)
        elapsed = time.perf_counter() - timed[0]
        rate = (self.step - timed[1]) * self.options.batch_size / elapsed
        lr = learning_rate(self.options, self.step - 1)
        earlier = next((row.get("seconds") or 0.0 for row in reversed(self.rows) if row["split"] == "train"), 0.0)
        seconds = earlier + elapsed
        self.rows.append(curve_row("train", self.step, loss=loss, lr=lr, tiles_per_s=rate, seconds=seconds))
        log.info("step %d: loss %.4f, lr %.2e, %.1f tiles/s", self.step, loss, lr, rate)

    def run(self) -> None:
        """Train from the current step to ``options.iterations``, logging, validating and checkpointing."""
        options = self.options
        if self.step == 0 and self.parts.validate_at_start:
            self._validate()
        losses, timed = [], (time.perf_counter(), self.step)
        self.model.train()
        while self.step < options.iterations:
            losses.append(self.train_step())
            last = self.step == options.iterations
            validates = self.step % options.validate_every == 0 or last
            if self.step % options.log_every == 0 or last:
                self._log(losses, timed)
                losses, timed = [], (time.perf_counter(), self.step)
            elif validates:
                self.checked_mean(losses)  # no checkpoint of diverged weights
            if validates:
                self._validate()
                self.save_checkpoint()
                timed = (time.perf_counter(), self.step)

    def _validate(self) -> None:
        """A validation step where there are validation sections, on the rank that validates."""
        if self.parts.validate is not None and self.world.main:
            self.validation_step()

    def load_best(self) -> None:
        """The best validated weights; the last ones when there are no validation sections (logged)."""
        if self.best is None:
            log.info("no validation sections: the model holds the weights of the last iteration")
            return
        if not self.best_path.exists():
            raise PipelineError(
                f"{self.best_path}: the best checkpoint (step {self.best['step']}) is missing; "
                f"delete {self.last_path} to train again"
            )
        self.model.load_state_dict(load_checkpoint_file(self.best_path)["model"])


def prepared_model(config: UNetConfig, options: TrainingOptions, device: torch.device, state: dict | None = None):
    """The network of ``config`` with the weights of ``state`` (random when None; call after seeding), on
    ``device``, in channels_last as ``options`` ask (faster on GPUs and CPUs, benchmarks/train_speed.py)."""
    model = build_model(config)
    if state is not None:
        model.load_state_dict(state)
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if options.channels_last else model
