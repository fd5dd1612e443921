"""Training stage: the U-Net on the augmented set, with the paper's weighted loss.

Loss (paper, eq. 1): pixel-wise softmax over the final feature map, cross-entropy
weighted by the weight map w(x), averaged over the output pixels. Optimiser as in
the paper by default: SGD with momentum 0.99 and one large tile per batch; Adam
and other batch sizes are options. Training is reproducible: batch ``step`` draws
its samples and on-the-fly flips from ``default_rng([seed, step])`` (``batches``,
which also holds the set on the device or reads it ahead), and the torch RNG
state (dropout) is checkpointed, so a run that was killed and resumed from
its last checkpoint ends with the same weights as one that was not (the CUDA
RNG state is checkpointed too; on a GPU, nondeterministic cuDNN kernels can
still make two runs differ slightly).

Checkpoints live in a folder that is not a Snakemake output (Snakemake deletes
the outputs of a failed job); each carries a signature of the model, the
optimisation settings and the data, and is used only when the signature matches.
They load as weights only (``torch.load(weights_only=True)``), so a file put
into a shared results folder cannot run code in the training job.

Fine-tuning (``init_from``): the weights of a trained model file replace the random
ones before the first step; its network and tile size must be this run's. The
starting model's input normalisation is kept (the weights were trained for it), its
file's sha256 joins the checkpoint signature and the model metadata.

With ``processes > 1`` (a preset's ``gpus``) the run is data-parallel
(DistributedDataParallel, launched by ``distributed.launch``): every rank draws the
same batch of ``step`` and computes on its own contiguous part of it, gradients are
averaged, so the update is that of one process with the whole batch; rank 0
validates and writes checkpoints and outputs. Without dropout the loss curve equals
the single-process one to float rounding; with dropout each rank draws its own masks.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..core.atomic import atomic_file
from ..core.checksums import sha256_of_file
from ..core.errors import InputDataError, PipelineError
from ..core.figures import pyplot
from ..data import volume_store
from ..inference.overlap_tile import TilePredictor
from ..metrics import validation_scores
from ..models.devices import amp_dtype, autocast, pick_device
from ..models.unet import MODEL_FORMAT, UNetConfig, build_model, count_parameters, load_model, save_model
from ..training import batches, distributed
from ..training.distributed import World
from ..transforms import normalisation
from ..transforms.cells import cells_of

log = logging.getLogger("unet_pipeline.stages.train")  # also when torchrun runs this module as __main__


@dataclass(frozen=True)
class TrainingOptions:
    iterations: int
    batch_size: int = 1
    optimizer: str = "sgd"
    learning_rate: float = 0.001
    momentum: float = 0.99
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup: int = 0
    online_augmentation: bool = True
    validate_every: int = 500
    log_every: int = 50
    seed: int = 0
    device: str = "auto"
    amp: str = "bf16"
    channels_last: bool = True
    compile: bool = False
    validation_batch_size: int = 4

    # settings that change the result; the rest (logging, device, speed) may change on resume
    RESULT_FIELDS = (
        "batch_size",
        "optimizer",
        "learning_rate",
        "momentum",
        "weight_decay",
        "schedule",
        "warmup",
        "online_augmentation",
        "seed",
    )


@dataclass(frozen=True)
class TrainingJob:
    """One run of the train rule: where it reads and writes, the network, the optimisation, the processes.

    ``outputs`` holds the paths of ``model``, ``metadata``, ``curve_csv`` and ``curve_png``;
    ``checkpoints`` is where ``last.pt`` and ``best.pt`` live (not a Snakemake output: they survive
    a kill); ``processes`` > 1 trains data-parallel, one process per GPU; ``init_from`` is a
    trained model file to start from (fine-tuning).
    """

    augmented: str
    volume: str
    outputs: dict
    checkpoints: str
    model: UNetConfig
    options: TrainingOptions
    preset: str = ""
    threads: int = 1
    processes: int = 1
    init_from: str | None = None
    RANK_SPEC = "job.json"  # in ``checkpoints``: what each rank of a data-parallel run reads

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)  # default: paths as text

    @classmethod
    def from_json(cls, text: str) -> TrainingJob:
        values = json.loads(text)
        return cls(**values | {"model": UNetConfig(**values["model"]), "options": TrainingOptions(**values["options"])})


def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """mean over pixels of w(x) * -log softmax(logits)(x)[label(x)] (paper, eq. 1)."""
    return (weights * F.cross_entropy(logits.float(), labels.long(), reduction="none")).mean()


def learning_rate(options: TrainingOptions, step: int) -> float:
    """The learning rate at ``step``: linear warm-up, then constant, polynomial or cosine decay."""
    if step < options.warmup:
        return options.learning_rate * (step + 1) / options.warmup
    progress = (step - options.warmup) / max(options.iterations - options.warmup, 1)
    if options.schedule == "poly":
        return options.learning_rate * (1.0 - progress) ** 0.9
    if options.schedule == "cosine":
        return options.learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))
    return options.learning_rate


def make_optimizer(model, options: TrainingOptions) -> torch.optim.Optimizer:
    if options.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=options.learning_rate, momentum=options.momentum, weight_decay=options.weight_decay
        )
    if options.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=options.learning_rate, weight_decay=options.weight_decay)
    raise PipelineError(f"unknown optimizer {options.optimizer!r}: use sgd or adam")


class AugmentedSet:
    """The augmented Zarr set: its (inputs, labels, weights) arrays, read lazily, and its provenance."""

    def __init__(self, path):
        self.group = volume_store.open_store(path)
        self.attrs = volume_store.provenance(self.group)
        self.arrays = tuple(self.group[name] for name in batches.ARRAYS)
        self.count = self.arrays[0].shape[0]


def check_batch_split(options: TrainingOptions, processes: int) -> None:
    """Data-parallel ranks take equal parts of each batch, so the batch must divide by their number."""
    if processes > 1 and options.batch_size % processes:
        raise PipelineError(
            f"training.batch_size {options.batch_size} does not divide among {processes} GPUs (processes); "
            f"use a multiple of {processes}"
        )


def normalisation_of(volume, sections) -> dict:
    """Mean and standard deviation of the training sections' gray values (scaled to [0, 1]), and their robust
    range (``normalisation.PERCENTILES``, gray values) that per-volume normalisation maps new volumes onto."""
    image = volume[volume_store.IMAGE_PATH]
    return normalisation.statistics(normalisation.histogram(image[z] for z in sections))


def validate(predictor: TilePredictor, volume, sections) -> dict:
    """Misclassified fraction, V_rand (ISBI style) and foreground IoU at threshold 0.5, averaged over ``sections``.

    Args:
        predictor: the network in eval mode with its tile settings.
        volume: the dataset's volume store (image, labels and their type).
        sections: the validation sections, predicted whole with the overlap-tile strategy.
    """
    image, labels = volume[volume_store.IMAGE_PATH], volume[volume_store.LABELS_PATH]
    label_type = volume_store.provenance(volume)["labels"]["type"]
    scores = [validation_scores(predictor.section(image[z]), cells_of(labels[z], label_type)) for z in sections]
    # nanmean: a section without true cells has no V_rand (metrics docstring) but still a pixel score.
    return {name: float(np.nanmean([score[name] for score in scores])) for name in scores[0]}


def _atomic_torch_save(payload, path: Path) -> None:
    with atomic_file(path) as tmp:
        torch.save(payload, tmp)


def run_signature(model_config: UNetConfig, options: TrainingOptions, data_attrs: dict, start: dict | None) -> str:
    """What a checkpoint must match to be resumed: model, result-relevant options, tile size, data, start."""
    described = {
        "model": asdict(model_config),
        "options": {field: getattr(options, field) for field in TrainingOptions.RESULT_FIELDS},
        "input_size": data_attrs["input_size"],
        "data": {key: data_attrs[key] for key in ("seed", "samples", "source", "augmentation")},
    }
    if start is not None:  # fine-tuning: which weights it started from (absent otherwise: old signatures hold)
        described["init_from"] = start["sha256"]
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


NETWORK_FIELDS = ("architecture", "in_channels", "classes", "levels", "base_channels", "padded")


def initial_weights(path, model_config: UNetConfig, input_size: int) -> tuple[dict, dict]:
    """Fine-tuning: the state dict of a trained model file and what to record of it.

    Raises:
        PipelineError: the file is missing or not a model, or its network or tile size is not this run's.
    """
    start, metadata = load_model(path)
    theirs = asdict(UNetConfig(**metadata["model"]))
    ours = asdict(model_config)
    if [theirs[key] for key in NETWORK_FIELDS] != [ours[key] for key in NETWORK_FIELDS] or (
        metadata["input_size"] != input_size
    ):
        describe = lambda config, size: ", ".join(f"{key} {config[key]}" for key in NETWORK_FIELDS) + f", tiles {size}"
        raise PipelineError(
            f"init_from {path}: its network ({describe(theirs, metadata['input_size'])}) is not the one trained "
            f"here ({describe(ours, input_size)}); fine-tuning needs the same network and tile size"
        )
    record = {"path": str(path), "sha256": sha256_of_file(path), "normalisation": metadata["normalisation"]}
    record |= {key: metadata.get("training", {}).get(key) for key in ("preset", "dataset")}
    return start.state_dict(), record


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


@dataclass
class TrainingParts:
    """What a ``Trainer`` is given: the network, its optimiser, its batches, where it runs, how it validates.

    ``batches`` maps a step to that step's (network input, labels, weights) on ``device``
    (``batches.batch_source``); ``validate`` scores the model on the validation sections, or is None
    when there are none; ``precision`` is the autocast dtype (``devices.amp_dtype``).
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    batches: Callable[[int], tuple]
    device: torch.device
    precision: torch.dtype | None = None
    world: World = distributed.SINGLE
    validate: Callable[[torch.nn.Module], dict] | None = None


class Trainer:
    """One training run: ``train_step``, ``validation_step``, checkpoints, and a short ``run`` loop.

    Checkpoints: ``last.pt`` after every validation (resumed when its signature matches) and ``best.pt``
    whenever validation improves (V_rand at threshold 0.5, then the misclassified fraction). The loss
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
        _atomic_torch_save(payload, self.last_path)

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
        log.info(
            "step %d: validation misclassified %.4f, V_rand %.4f", self.step, scores["misclassified"], scores["v_rand"]
        )
        rank = (scores["v_rand"], -scores["misclassified"])
        if self.best is None or rank > (self.best["v_rand"], -self.best["misclassified"]):
            self.best = {"step": self.step, **scores}
            _atomic_torch_save(
                {"signature": self.signature, "step": self.step, "model": self.model.state_dict()}, self.best_path
            )

    def _log(self, losses: list[torch.Tensor], timed: tuple[float, int]) -> None:
        """One training row: the mean loss of ``losses``, the learning rate, and the tiles per second since
        ``timed`` (time, step): the last log or validation, so that validation time is not in the rate."""
        loss = self.checked_mean(losses)
        rate = (self.step - timed[1]) * self.options.batch_size / (time.perf_counter() - timed[0])
        lr = learning_rate(self.options, self.step - 1)
        self.rows.append(curve_row("train", self.step, loss=loss, lr=lr, tiles_per_s=rate))
        log.info("step %d: loss %.4f, lr %.2e, %.1f tiles/s", self.step, loss, lr, rate)

    def run(self) -> None:
        """Train from the current step to ``options.iterations``, logging, validating and checkpointing."""
        options, losses, timed = self.options, [], (time.perf_counter(), self.step)
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
                if self.parts.validate is not None and self.world.main:
                    self.validation_step()
                self.save_checkpoint()
                timed = (time.perf_counter(), self.step)

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


def load_checkpoint_file(path: Path) -> dict:
    """A checkpoint's payload, unpickled as weights only: a file from elsewhere cannot run code here.

    Raises:
        PipelineError: the file is not a checkpoint that loads so (truncated, or holding other objects).
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)  # RNG states stay on the CPU
    except Exception as error:  # torch raises UnpicklingError, RuntimeError or EOFError for such files
        raise PipelineError(
            f"{path}: not a training checkpoint that loads as weights only ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); delete it to train again"
        ) from error


@dataclass(frozen=True)
class TrainingSetup:
    """What the training run was built from, for the model's metadata: data, volume, normalisation, start."""

    data_attrs: dict
    volume_info: dict
    normalisation: dict
    start: dict | None


def validator(job: TrainingJob, setup: TrainingSetup, device: torch.device, volume) -> Callable | None:
    """The validation that the trainer runs: the network as the predict stage runs it (tiles, normalisation,
    amp on this device), so validation scores what prediction will; None without validation sections."""
    sections = setup.volume_info["sections"]["validation"]
    if not sections:
        return None
    options, input_size = job.options, setup.data_attrs["input_size"]

    def scores(model: torch.nn.Module) -> dict:
        predictor = TilePredictor(
            model,
            job.model.geometry,
            input_size,
            setup.normalisation,
            device,
            amp_dtype(options.amp, device),
            options.validation_batch_size,
        )
        return validate(predictor, volume, sections)

    return scores


def prepared_model(config: UNetConfig, options: TrainingOptions, device: torch.device, state: dict | None = None):
    """The network of ``config`` with the weights of ``state`` (random when None; call after seeding), on
    ``device``, in channels_last as ``options`` ask (faster on GPUs and CPUs, benchmarks/train_speed.py)."""
    model = build_model(config)
    if state is not None:
        model.load_state_dict(state)
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if options.channels_last else model


def build_trainer(job: TrainingJob, data: AugmentedSet, world: World = distributed.SINGLE) -> tuple:
    """The trainer of ``job`` on ``data``, assembled: device, ranks, model, optimiser, batches, validation.

    Returns:
        (trainer, setup): the ``Trainer`` and the ``TrainingSetup`` its metadata records.
    """
    options = job.options
    device = distributed.rank_device(pick_device(options.device), world)
    world = distributed.join(world, device)
    volume = volume_store.open_store(job.volume)
    torch.manual_seed(options.seed)  # the same initial weights on every rank
    state, start = (
        initial_weights(job.init_from, job.model, data.attrs["input_size"]) if job.init_from else (None, None)
    )
    model = prepared_model(job.model, options, device, state)
    info = volume_store.provenance(volume)
    norm = start["normalisation"] if start else normalisation_of(volume, info["sections"]["train"])
    setup = TrainingSetup(data.attrs, info, norm, start)
    parts = TrainingParts(
        model=model,
        optimizer=make_optimizer(model, options),
        batches=batches.batch_source(data.arrays, options, norm, device, world, job.threads),
        device=device,
        precision=amp_dtype(options.amp, device, cpu=True),
        world=world,
        validate=validator(job, setup, device, volume),
    )
    return Trainer(parts, options, job.checkpoints, run_signature(job.model, options, data.attrs, start)), setup


def model_metadata(job: TrainingJob, trainer: Trainer, setup: TrainingSetup) -> dict:
    """Everything needed to rebuild, run and trace the trained network (stored in model.pt and model.json)."""
    attrs, info, geometry, options = setup.data_attrs, setup.volume_info, job.model.geometry, job.options
    encoder = job.model.encoder_weights
    training = {"preset": job.preset, "dataset": info["dataset"], "iterations": options.iterations}
    training |= {"options": asdict(options), "best": trainer.best, "device": str(trainer.device)}
    training |= {"processes": trainer.world.size, "init_from": setup.start}
    return {
        "format": MODEL_FORMAT,
        "model": asdict(job.model),
        "parameters": count_parameters(trainer.model),
        "input_size": attrs["input_size"],
        "output_size": attrs["output_size"],
        "margin": attrs["margin"],
        "tile_step": geometry.tile_step(attrs["input_size"]),
        "normalisation": setup.normalisation,
        "classes": ["background", "foreground"],
        "training": training | {"validation_sections": info["sections"]["validation"]},
        "data": {
            "image_pixel_sha256": volume_store.image_id(info),
            "labels_pixel_sha256": info["labels"]["pixel_sha256"],
            "augmentation_seed": attrs["seed"],
            "augmented_samples": attrs["samples"],
            "encoder_weights_sha256": sha256_of_file(encoder) if encoder else None,
        },
        "torch_version": str(torch.__version__),
    }


def open_training_data(augmented_path, volume_path, geometry) -> AugmentedSet:
    """The augmented set, checked against the network's tiles and the volume's labels."""
    data = AugmentedSet(augmented_path)
    input_size, output_size = data.attrs["input_size"], data.attrs["output_size"]
    if geometry.output_size(input_size) != output_size:
        raise InputDataError(
            f"{augmented_path}: tiles of {input_size} -> {output_size} px do not fit the network "
            f"({input_size} -> {geometry.output_size(input_size)} px)"
        )
    labels = volume_store.provenance(volume_store.open_store(volume_path))["labels"]
    if labels["pixel_sha256"] != data.attrs["source"]["labels_pixel_sha256"]:
        raise InputDataError(f"{augmented_path}: augmented from other labels than {volume_path}")
    return data


def write_outputs(trainer: Trainer, outputs: dict, metadata: dict) -> None:
    """model.pt, model.json, the training curve as CSV and PNG; each written atomically (ONNX: the export stage)."""
    save_model(trainer.model, outputs["model"], metadata)
    with atomic_file(outputs["metadata"]) as tmp:
        tmp.write_text(json.dumps(metadata, indent=2) + "\n")
    with atomic_file(outputs["curve_csv"]) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CURVE_FIELDS)
        writer.writeheader()
        writer.writerows(trainer.rows)
    plot_curve(trainer.rows, outputs["curve_png"])


def train(job: TrainingJob) -> dict:
    """Train, validate, checkpoint and write the model, its JSON and the training curve.

    Args:
        job: inputs (the augment stage's Zarr set; the training dataset's volume store, whose training
            sections give the normalisation and whose validation sections select the checkpoint),
            outputs, checkpoint folder, network, optimisation, CPU threads and processes.

    Returns:
        The model's metadata.
    """
    check_batch_split(job.options, job.processes)
    if job.processes == 1:
        return train_in_process(job, distributed.SINGLE)
    spec = Path(job.checkpoints) / TrainingJob.RANK_SPEC
    spec.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(spec) as tmp:
        tmp.write_text(job.to_json())
    distributed.launch("unet_pipeline.stages.train", spec, job.processes, max(job.threads // job.processes, 1))
    return json.loads(Path(job.outputs["metadata"]).read_text())


def train_in_process(job: TrainingJob, world: World) -> dict:
    """This process's share of ``train``: all of it in a single process, one rank of a data-parallel run."""
    torch.set_num_threads(max(job.threads // world.size, 1))
    data = open_training_data(job.augmented, job.volume, job.model.geometry)
    trainer, setup = build_trainer(job, data, world)
    try:
        trainer.load_checkpoint()
        log.info(
            "training %s (%d parameters) on %s (%d processes) for %d iterations, %d tiles of %d -> %d px per batch",
            job.model.architecture,
            count_parameters(trainer.model),
            trainer.device,
            trainer.world.size,
            job.options.iterations,
            job.options.batch_size,
            data.attrs["input_size"],
            data.attrs["output_size"],
        )
        trainer.run()
        if not trainer.world.main:
            return {}
        trainer.load_best()
        metadata = model_metadata(job, trainer, setup)
        write_outputs(trainer, job.outputs, metadata)
        return metadata
    finally:
        trainer.parts.batches.close()
        distributed.leave(trainer.world)


def _rank_main(spec: str) -> None:
    """One rank of a data-parallel run, as torchrun starts it: ``python -m unet_pipeline.stages.train JOB_JSON``."""
    world = distributed.current_world()
    # rank 0 reports; the others only warn. The train rule's process copies these lines into its log.
    logging.basicConfig(
        level=logging.INFO if world.main else logging.WARNING,
        format=f"rank {world.rank}: %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        train_in_process(TrainingJob.from_json(Path(spec).read_text()), world)
    except PipelineError as error:
        log.error("%s", error)
        raise SystemExit(1) from error


if __name__ == "__main__":
    _rank_main(sys.argv[1])
