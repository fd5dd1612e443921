"""Training stage: the U-Net on the augmented set, with the paper's weighted loss.

Loss (paper, eq. 1): pixel-wise softmax over the final feature map, cross-entropy
weighted by the weight map w(x), averaged over the output pixels. Optimiser as in
the paper by default: SGD with momentum 0.99 and one large tile per batch; Adam
and other batch sizes are options. Training is reproducible: batch ``step`` draws
its samples and on-the-fly flips from ``default_rng([seed, step])``, and the torch
RNG state (dropout) is checkpointed, so a run that was killed and resumed from
its last checkpoint ends with the same weights as one that was not (the CUDA
RNG state is checkpointed too; on a GPU, nondeterministic cuDNN kernels can
still make two runs differ slightly).

Checkpoints live in a folder that is not a Snakemake output (Snakemake deletes
the outputs of a failed job); each carries a signature of the model, the
optimisation settings and the data, and is used only when the signature matches.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import volume_store
from .checksums import sha256_of_file
from .devices import amp_dtype, autocast, pick_device
from .errors import InputDataError, PipelineError
from .figures import pyplot
from .metrics import misclassified_fraction, overlap_scores, proposal_cells, rand_and_info, truth_cells
from .overlap_tile import predict_section
from .unet import MODEL_FORMAT, UNetConfig, build_model, count_parameters, save_model

log = logging.getLogger(__name__)

IN_MEMORY_BYTES = 1 << 30  # augmented sets up to this size are read into memory once


@dataclass(frozen=True)
class TrainingOptions:
    iterations: int
    batch_size: int = 1
    optimizer: str = "sgd"
    learning_rate: float = 0.01
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
    """The augmented Zarr set, read into memory when small enough, else per sample."""

    def __init__(self, path):
        self.group = volume_store.open_store(path)
        self.attrs = volume_store.provenance(self.group)
        arrays = [self.group[name] for name in ("inputs", "labels", "weights")]
        size = sum(array.nbytes for array in arrays)
        self.arrays = [array[:] for array in arrays] if size <= IN_MEMORY_BYTES else arrays
        self.count = arrays[0].shape[0]

    def batch(self, indices: np.ndarray):
        return [np.stack([np.asarray(array[int(i)]) for i in indices]) for array in self.arrays]


def draw_batch(data: AugmentedSet, options: TrainingOptions, step: int):
    """The batch of ``step``: samples and on-the-fly flips/quarter turns drawn from (seed, step)."""
    rng = np.random.default_rng([options.seed, step])
    indices = rng.integers(data.count, size=options.batch_size)
    inputs, labels, weights = data.batch(indices)
    if options.online_augmentation:
        for row, (turns, flip) in enumerate(zip(rng.integers(4, size=len(indices)), rng.random(len(indices)) < 0.5)):
            for array in (inputs, labels, weights):
                array[row] = np.rot90(array[row][:, ::-1] if flip else array[row], turns)
    return inputs, labels, weights


def normalisation_of(volume, sections) -> dict:
    """Mean and standard deviation of the training sections' gray values (scaled to [0, 1])."""
    import dask.array as da

    stack = da.from_zarr(volume[volume_store.IMAGE_PATH])[sections].astype(np.float64) / 255.0
    mean, std = da.compute(stack.mean(), stack.std())
    return {"mean": float(mean), "std": float(max(std, 1e-3))}


def validate(model, volume, sections, geometry, input_size, normalisation, device, amp_dtype, batch_size) -> dict:
    """Misclassified fraction, V_rand (ISBI style) and foreground IoU at threshold 0.5 over the validation sections."""
    model.eval()
    image, labels = volume[volume_store.IMAGE_PATH], volume[volume_store.LABELS_PATH]
    label_type = volume_store.provenance(volume)["labels"]["type"]
    scores = []
    for section in sections:
        probability = predict_section(
            model,
            image[section],
            geometry,
            input_size,
            normalisation,
            device,
            batch_size=batch_size,
            amp_dtype=amp_dtype,
        )
        truth = labels[section]
        scores.append(
            {
                "misclassified": misclassified_fraction(probability, truth),
                "v_rand": rand_and_info(truth_cells(truth, label_type), proposal_cells(probability, 0.5))["v_rand"],
                "iou": overlap_scores(probability, truth)[0],
            }
        )
    model.train()
    return {name: float(np.mean([score[name] for score in scores])) for name in scores[0]}


def _atomic_torch_save(payload, path: Path) -> None:
    with volume_store.atomic_file(path) as tmp:
        torch.save(payload, tmp)


def run_signature(model_config: UNetConfig, options: TrainingOptions, input_size: int, data_attrs: dict) -> str:
    """What a checkpoint must match to be resumed: model, result-relevant options, tile size, data."""
    described = {
        "model": asdict(model_config),
        "options": {field: getattr(options, field) for field in TrainingOptions.RESULT_FIELDS},
        "input_size": input_size,
        "data": {key: data_attrs[key] for key in ("seed", "samples", "source", "augmentation")},
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


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


def export_torchscript(model, input_size: int, path) -> None:
    """Trace the network for use without this package (any legal tile size works)."""
    model = model.eval().cpu()
    example = torch.zeros(1, model.config.in_channels, input_size, input_size)
    with torch.no_grad():
        traced = torch.jit.trace(model, example)
    with volume_store.atomic_file(path) as tmp:
        traced.save(str(tmp))


def train(
    augmented_path,
    volume_path,
    outputs: dict,
    checkpoint_dir,
    model_config: UNetConfig,
    options: TrainingOptions,
    threads: int = 1,
    preset: str = "",
) -> dict:
    """Train, validate, checkpoint and write the model, its JSON, TorchScript and the training curve.

    ``outputs`` maps ``model``, ``metadata``, ``torchscript``, ``curve_csv`` and
    ``curve_png`` to paths.
    """
    device = pick_device(options.device)
    torch.set_num_threads(max(threads, 1))
    precision = amp_dtype(options.amp, device)
    data = AugmentedSet(augmented_path)
    geometry = model_config.geometry
    input_size = data.attrs["input_size"]
    if geometry.output_size(input_size) != data.attrs["output_size"]:
        raise InputDataError(
            f"{augmented_path}: tiles of {input_size} -> {data.attrs['output_size']} px do not fit the network "
            f"({input_size} -> {geometry.output_size(input_size)} px)"
        )
    volume = volume_store.open_store(volume_path)
    volume_info = volume_store.provenance(volume)
    if volume_info["labels"]["pixel_sha256"] != data.attrs["source"]["labels_pixel_sha256"]:
        raise InputDataError(f"{augmented_path}: augmented from other labels than {volume_path}")
    validation_sections = volume_info["sections"]["validation"]
    normalisation = normalisation_of(volume, volume_info["sections"]["train"])

    torch.manual_seed(options.seed)
    model = build_model(model_config).to(device)
    if device.type == "cuda" and options.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, options)
    signature = run_signature(model_config, options, input_size, data.attrs)
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path = checkpoint_dir / "last.pt", checkpoint_dir / "best.pt"
    step, rows, best = 0, [], None
    if last_path.exists():
        saved = torch.load(last_path, map_location="cpu", weights_only=False)  # RNG states must stay on the CPU
        if saved["signature"] == signature and saved["step"] <= options.iterations:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            torch.set_rng_state(saved["torch_rng"])
            if device.type == "cuda" and saved.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(saved["cuda_rng"], device)
            step, rows, best = saved["step"], saved["rows"], saved["best"]
            log.info("resuming from %s at step %d", last_path, step)
        else:
            log.info("ignoring %s: it belongs to another configuration or a longer run", last_path)
    forward = torch.compile(model) if options.compile else model
    log.info(
        "training %s (%d parameters) on %s for %d iterations, %d tiles of %d -> %d px per batch",
        model_config.architecture,
        count_parameters(model),
        device,
        options.iterations,
        options.batch_size,
        input_size,
        data.attrs["output_size"],
    )

    def checkpoint():
        payload = {
            "signature": signature,
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "rows": rows,
            "best": best,
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        }
        _atomic_torch_save(payload, last_path)

    model.train()
    running, started, tiles_done = [], time.perf_counter(), 0
    while step < options.iterations:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(options, step)
        inputs, labels, weights = draw_batch(data, options, step)
        x = torch.from_numpy(
            ((inputs.astype(np.float32) / 255.0 - normalisation["mean"]) / normalisation["std"])[:, None]
        ).to(device)
        if device.type == "cuda" and options.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.from_numpy(labels).to(device)
        w = torch.from_numpy(weights).to(device)
        with autocast(device, precision):
            logits = forward(x)
        loss = weighted_cross_entropy(logits, y, w)
        if not torch.isfinite(loss):
            raise PipelineError(f"training diverged at step {step} (loss {loss.item()}); lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        tiles_done += len(inputs)
        running.append(loss.item())
        if step % options.log_every == 0 or step == options.iterations:
            rate = tiles_done / (time.perf_counter() - started)
            rows.append(
                {
                    "split": "train",
                    "step": step,
                    "loss": float(np.mean(running)),
                    "lr": learning_rate(options, step - 1),
                    "misclassified": None,
                    "v_rand": None,
                    "iou": None,
                    "tiles_per_s": rate,
                }
            )
            log.info("step %d: loss %.4f, lr %.2e, %.1f tiles/s", step, rows[-1]["loss"], rows[-1]["lr"], rate)
            running = []
        if step % options.validate_every == 0 or step == options.iterations:
            if validation_sections:
                scores = validate(
                    model,
                    volume,
                    validation_sections,
                    geometry,
                    input_size,
                    normalisation,
                    device,
                    precision,
                    options.validation_batch_size,
                )
                rows.append(
                    {"split": "validation", "step": step, "loss": None, "lr": None, **scores, "tiles_per_s": None}
                )
                log.info(
                    "step %d: validation misclassified %.4f, V_rand %.4f",
                    step,
                    scores["misclassified"],
                    scores["v_rand"],
                )
                if best is None or (scores["v_rand"], -scores["misclassified"]) > (
                    best["v_rand"],
                    -best["misclassified"],
                ):
                    best = {"step": step, **scores}
                    _atomic_torch_save({"signature": signature, "step": step, "model": model.state_dict()}, best_path)
            checkpoint()

    if best is not None:
        if not best_path.exists():
            raise PipelineError(
                f"{best_path}: the best checkpoint (step {best['step']}) is missing; delete {last_path} to train again"
            )
        model.load_state_dict(torch.load(best_path, map_location="cpu", weights_only=False)["model"])
    else:
        log.info("no validation sections: the model holds the weights of the last iteration")
    metadata = {
        "format": MODEL_FORMAT,
        "model": asdict(model_config),
        "parameters": count_parameters(model),
        "input_size": input_size,
        "output_size": data.attrs["output_size"],
        "margin": data.attrs["margin"],
        "tile_step": geometry.tile_step(input_size),
        "normalisation": normalisation,
        "classes": ["background", "foreground"],
        "training": {
            "preset": preset,
            "dataset": volume_info["dataset"],
            "iterations": options.iterations,
            "options": asdict(options),
            "best": best,
            "validation_sections": validation_sections,
            "device": str(device),
        },
        "data": {
            "image_pixel_sha256": volume_info["image"]["pixel_sha256"],
            "labels_pixel_sha256": volume_info["labels"]["pixel_sha256"],
            "augmentation_seed": data.attrs["seed"],
            "augmented_samples": data.attrs["samples"],
            "encoder_weights_sha256": sha256_of_file(model_config.encoder_weights)
            if model_config.encoder_weights
            else None,
        },
        "torch_version": str(torch.__version__),
    }
    save_model(model, outputs["model"], metadata)
    Path(outputs["metadata"]).write_text(json.dumps(metadata, indent=2) + "\n")
    export_torchscript(model, input_size, outputs["torchscript"])
    with open(outputs["curve_csv"], "w", newline="") as handle:
        writer = csv.DictWriter(
            handle, fieldnames=["split", "step", "loss", "lr", "misclassified", "v_rand", "iou", "tiles_per_s"]
        )
        writer.writeheader()
        writer.writerows(rows)
    plot_curve(rows, outputs["curve_png"])
    return metadata
