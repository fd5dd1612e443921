"""Training stage: the U-Net of a preset on the augmented set, assembled from ``training``'s pieces.

The loss is the paper's weighted cross-entropy (``training.loss``); the optimiser (by default the paper's
SGD, the schema's ``training``) and its schedule are ``training.optimisation``. Training is
reproducible: batch ``step`` draws its samples and on-the-fly flips from ``default_rng([seed, step])``
(``training.batches``), and the torch RNG state (dropout) is checkpointed, so a run that was killed and
resumed from its last checkpoint ends with the same weights as one that was not (the CUDA RNG state is
checkpointed too; on a GPU, nondeterministic cuDNN kernels can still make two runs differ slightly).

Checkpoints live in a folder that is not a Snakemake output (Snakemake deletes
the outputs of a failed job); each carries a signature of the model, the
optimisation settings and the data, and is used only when the signature matches
(``training.checkpoints``, which loads them as weights only).

Fine-tuning (``init_from``): the weights of a trained model file replace the random
ones before the first step; its network and tile size must be this run's. The input
normalisation is fitted so that the new stack's membranes and cells reach the network as
the starting stack's did (``normalisation.for_new_stack``; ``init_normalisation: keep``
keeps the starting model's); the starting file's sha256 joins the checkpoint signature
and the model metadata.

Several datasets (a preset's ``train_dataset`` as a list): their augmented sets are joined, each sample
normalised by its own dataset's training sections (``batches.SetNormalisation``); validation scores each
dataset's validation sections with its own normalisation and selects the checkpoint by their mean (each
dataset counts once, whatever its size). The first dataset is the reference: its normalisation is the
model's ``normalisation`` (what a volume from elsewhere is predicted with), and the model records every
dataset's (``normalisations``, keyed by the image's pixel checksum), which prediction uses for that volume.

With ``processes > 1`` (a preset's ``gpus``) the run is data-parallel
(DistributedDataParallel, launched by ``distributed.launch``): every rank draws the
same batch of ``step`` and computes on its own contiguous part of it, gradients are
averaged, so the update is that of one process with the whole batch; rank 0
validates and writes checkpoints and outputs. Without dropout the loss curve equals
the single-process one to float rounding; with dropout each rank draws its own masks.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..core.allocator import keep_freed_memory
from ..core.atomic import atomic_file
from ..core.checksums import sha256_of_file
from ..core.errors import InputDataError, PipelineError
from ..data import volume_store
from ..inference import tile_choice
from ..inference.overlap_tile import TilePredictor
from ..models.devices import amp_dtype, pick_device
from ..models.unet import MODEL_FORMAT, UNetConfig, count_parameters, save_model
from ..training import batches, distributed
from ..training.checkpoints import initial_weights, run_signature
from ..training.curve import CURVE_FIELDS, fine_tuning_record, plot_curve, validation_score
from ..training.distributed import World
from ..training.optimisation import make_optimizer
from ..training.options import TrainingOptions
from ..training.trainer import Trainer, TrainingParts, prepared_model
from ..training.validation import tta_choice, validate
from ..transforms import normalisation

log = logging.getLogger("unet_pipeline.stages.train")  # also when torchrun runs this module as __main__


@dataclass(frozen=True)
class TrainingJob:
    """One run of the train rule: where it reads and writes, the network, the optimisation, the processes.

    ``augmented`` and ``volume`` are lists, one augmented set and volume store per training dataset, in
    the same order (a single path is one dataset); ``outputs`` holds the paths of ``model``, ``metadata``,
    ``curve_csv`` and ``curve_png``;
    ``checkpoints`` is where ``last.pt`` and ``best.pt`` live (not a Snakemake output: they survive
    a kill); ``processes`` > 1 trains data-parallel, one process per GPU; ``init_from`` is a
    trained model file to start from (fine-tuning).
    """

    augmented: tuple[str, ...]
    volume: tuple[str, ...]
    outputs: dict
    checkpoints: str
    model: UNetConfig
    options: TrainingOptions
    preset: str = ""
    threads: int = 1
    processes: int = 1
    init_from: str | None = None
    RANK_SPEC = "job.json"  # in ``checkpoints``: what each rank of a data-parallel run reads

    def __post_init__(self):
        for name in ("augmented", "volume"):
            value = getattr(self, name)
            object.__setattr__(self, name, (str(value),) if isinstance(value, str | Path) else tuple(map(str, value)))
        if len(self.augmented) != len(self.volume):
            raise PipelineError(f"{len(self.augmented)} augmented sets for {len(self.volume)} volumes")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)  # default: paths as text

    @classmethod
    def from_json(cls, text: str) -> TrainingJob:
        values = json.loads(text)
        return cls(**values | {"model": UNetConfig(**values["model"]), "options": TrainingOptions(**values["options"])})


class AugmentedSet:
    """The augmented Zarr set: its (inputs, labels, weights) arrays, read lazily, and its provenance."""

    def __init__(self, path):
        self.group = volume_store.open_store(path)
        self.attrs = volume_store.provenance(self.group)
        self.arrays = tuple(self.group[name] for name in batches.ARRAYS)
        self.count = self.arrays[0].shape[0]


class TrainingData:
    """The augmented sets of every training dataset, joined (``batches.Joined``): ``arrays`` and ``offsets``
    (where each set's samples start), and ``attrs``, one set's provenance, or for several the first one's
    with ``dataset``, ``seed``, ``samples``, ``source`` and ``augmentation`` as lists over the sets (what the
    checkpoint signature and the model record)."""

    LISTED = ("dataset", "seed", "samples", "source", "augmentation")

    def __init__(self, sets: list[AugmentedSet]):
        self.sets = sets
        if len(sets) == 1:
            self.arrays, self.offsets, self.attrs = sets[0].arrays, (0,), sets[0].attrs
            return
        joined = [batches.Joined(arrays) for arrays in zip(*(data.arrays for data in sets))]
        self.arrays, self.offsets = tuple(joined), tuple(int(k) for k in joined[0].offsets[:-1])
        self.attrs = sets[0].attrs | {key: [data.attrs[key] for data in sets] for key in self.LISTED}


def check_batch_split(options: TrainingOptions, processes: int) -> None:
    """Data-parallel ranks take equal parts of each batch, so the batch must divide by their number."""
    if processes > 1 and options.batch_size % processes:
        raise PipelineError(
            f"training.batch_size {options.batch_size} does not divide among {processes} GPUs (processes); "
            f"use a multiple of {processes}"
        )


def normalisation_of(volume, sections) -> dict:
    """Mean and standard deviation of the training sections' gray values (scaled to [0, 1]), their robust
    range (``normalisation.PERCENTILES``, gray values) that per-volume normalisation maps new volumes onto,
    and the mean gray value of each class (``class_means``), which fine-tuning from this model matches."""
    image, labels = volume[volume_store.IMAGE_PATH], volume[volume_store.LABELS_PATH]
    counts = normalisation.class_histograms((image[z] for z in sections), (labels[z] for z in sections))
    return normalisation.statistics(counts.sum(axis=0)) | {"class_means": normalisation.means_of(counts)}


def run_normalisation(volume, sections, start: dict | None, options: TrainingOptions) -> dict:
    """The network's input normalisation: the training sections' own, or with ``init_from`` the starting
    model's (``init_normalisation: keep``) or one fitted to carry the new stack onto it (``fit``)."""
    if start is not None and options.init_normalisation == "keep":
        return start["normalisation"]
    own = normalisation_of(volume, sections)
    return own if start is None else normalisation.for_new_stack(start["normalisation"], own)


@dataclass(frozen=True)
class TrainingSetup:
    """What the training run was built from, for the model's metadata: data, and per training dataset its
    volume store, provenance and normalisation (the first: the reference); the model it started from."""

    data_attrs: dict
    volumes: tuple
    volume_infos: tuple[dict, ...]
    normalisations: tuple[dict, ...]
    start: dict | None

    @property
    def volume_info(self) -> dict:
        return self.volume_infos[0]

    @property
    def normalisation(self) -> dict:
        return self.normalisations[0]

    def validation_sets(self) -> list[tuple[str, object, list, dict]]:
        """(dataset, volume store, validation sections, normalisation) of each dataset that has validation
        sections."""
        sets = zip(self.volumes, self.volume_infos, self.normalisations, strict=True)
        return [
            (info["dataset"], volume, info["sections"]["validation"], norm)
            for volume, info, norm in sets
            if info["sections"]["validation"]
        ]


def validator(job: TrainingJob, setup: TrainingSetup, device: torch.device) -> Callable | None:
    """The validation that the trainer runs: the network as the predict stage runs it (tiles, normalisation,
    amp on this device), so validation scores what prediction will; each dataset's validation sections with
    its own normalisation, the scores averaged over the datasets; None without validation sections."""
    sets = setup.validation_sets()
    if not sets:
        return None

    def scores(model: torch.nn.Module) -> dict:
        found = {}
        for name, volume, sections, norm in sets:
            found[name] = validate(validation_predictor(job, setup, device, model, norm, volume), volume, sections)
        if len(found) > 1:
            log.info("validation per dataset: %s", {name: round(validation_score(s), 6) for name, s in found.items()})
        return {key: sum(s[key] for s in found.values()) / len(found) for key in next(iter(found.values()))}

    return scores


def validation_predictor(job: TrainingJob, setup: TrainingSetup, device, model, norm: dict, volume) -> TilePredictor:
    """The network as the predict stage runs it, on the sections of the volume store ``volume``: tiles of
    ``tile_choice.validation_size`` (which give what the training tile gives, faster), the normalisation ``norm``
    and amp on this device."""
    options = job.options
    geometry = job.model.geometry
    section = volume[volume_store.IMAGE_PATH].shape[1:]
    return TilePredictor(
        model,
        geometry,
        tile_choice.validation_size(geometry, setup.data_attrs["input_size"], section),
        norm,
        device,
        amp_dtype(options.amp, device),
        options.validation_batch_size,
    )


def choose_tta(job: TrainingJob, setup: TrainingSetup, trainer: Trainer) -> dict | None:
    """The trained network's choice of test-time augmentation on its validation sections (``tta_choice``),
    which ``prediction.tta: auto`` follows; None without validation sections. With several datasets, each is
    scored and TTA chosen where the mean of their best V_rand is higher with it (the choices under ``datasets``)."""
    sets = setup.validation_sets()
    if not sets:
        return None
    trainer.model.eval()  # as prediction runs it: no dropout
    choices = {
        name: tta_choice(
            validation_predictor(job, setup, trainer.device, trainer.model, norm, volume), volume, sections
        )
        for name, volume, sections, norm in sets
    }
    if len(choices) == 1:
        return next(iter(choices.values()))
    best = {way: sum(c["v_rand"][way] for c in choices.values()) / len(choices) for way in ("with", "without")}
    log.info(
        "test-time augmentation %s: mean validation V_rand over the datasets %s", best["with"] > best["without"], best
    )
    return {"chosen": best["with"] > best["without"], "v_rand": best, "datasets": choices}


def build_trainer(job: TrainingJob, data: TrainingData, world: World = distributed.SINGLE) -> tuple:
    """The trainer of ``job`` on ``data``, assembled: device, ranks, model, optimiser, batches, validation.

    Returns:
        (trainer, setup): the ``Trainer`` and the ``TrainingSetup`` its metadata records.
    """
    options = job.options
    device = distributed.rank_device(pick_device(options.device), world)
    world = distributed.join(world, device)
    volumes = tuple(volume_store.open_store(path) for path in job.volume)
    torch.manual_seed(options.seed)  # the same initial weights on every rank
    state, start = (
        initial_weights(job.init_from, job.model, data.attrs["input_size"]) if job.init_from else (None, None)
    )
    model = prepared_model(job.model, options, device, state)
    infos = tuple(volume_store.provenance(volume) for volume in volumes)
    norms = tuple(run_normalisation(v, info["sections"]["train"], start, options) for v, info in zip(volumes, infos))
    setup = TrainingSetup(data.attrs, volumes, infos, norms, start)
    per_sample = batches.SetNormalisation(norms, data.offsets)
    try:
        source = batches.batch_source(data.arrays, options, per_sample, device, world, job.threads)
    except PipelineError as error:  # the sets' weights: name the files
        raise InputDataError(f"{', '.join(map(str, job.augmented))}: {error}") from error
    parts = TrainingParts(
        model=model,
        optimizer=make_optimizer(model, options),
        batches=source,
        device=device,
        precision=amp_dtype(options.amp, device, cpu=True),
        world=world,
        validate=validator(job, setup, device),
        validate_at_start=start is not None,  # fine-tuning: the starting model's zero-shot score first
    )
    return Trainer(parts, options, job.checkpoints, run_signature(job.model, options, data.attrs, start)), setup


def model_metadata(job: TrainingJob, trainer: Trainer, setup: TrainingSetup) -> dict:
    """Everything needed to rebuild, run and trace the trained network (stored in model.pt and model.json)."""
    attrs, info, geometry, options = setup.data_attrs, setup.volume_info, job.model.geometry, job.options
    encoder = job.model.encoder_weights
    training = {"preset": job.preset, "dataset": info["dataset"], "iterations": options.iterations}
    training |= {"datasets": [other["dataset"] for other in setup.volume_infos]}
    training |= {"options": asdict(options), "best": trainer.best, "device": str(trainer.device)}
    training |= {"processes": trainer.world.size, "init_from": setup.start}
    training |= {"fine_tuning": fine_tuning_record(trainer.rows) if setup.start else None}
    return {
        "format": MODEL_FORMAT,
        "model": asdict(job.model),
        "parameters": count_parameters(trainer.model),
        "input_size": attrs["input_size"],
        "output_size": attrs["output_size"],
        "margin": attrs["margin"],
        "tile_step": geometry.tile_step(attrs["input_size"]),
        "normalisation": setup.normalisation,
        "normalisations": normalisations_by_image(setup),
        "classes": ["background", "foreground"],
        "training": training | {"validation_sections": info["sections"]["validation"]},
        "data": {
            "image_pixel_sha256": volume_store.image_id(info),
            "labels_pixel_sha256": info["labels"]["pixel_sha256"],
            "augmentation_seed": attrs["seed"],
            "augmented_samples": attrs["samples"],
            "encoder_weights_sha256": sha256_of_file(encoder) if encoder else None,
            # what prediction compares a volume's pixel size with (predict.pixel_size_check)
            "voxel_sizes": {other["dataset"]: voxel_size_of(other) for other in setup.volume_infos},
        },
        "torch_version": str(torch.__version__),
    }


def voxel_size_of(info: dict) -> dict:
    """A volume store's voxel size (z, y, x) and unit as its provenance records them (None where not configured)."""
    return {"voxel_size": info.get("voxel_size"), "unit": info.get("unit")}


def normalisations_by_image(setup: TrainingSetup) -> dict:
    """Each training dataset's normalisation, keyed by its image's pixel checksum (what prediction matches a
    volume by), with the dataset's name."""
    pairs = zip(setup.volume_infos, setup.normalisations, strict=True)
    return {volume_store.image_id(info): {"dataset": info["dataset"], **norm} for info, norm in pairs}


def open_training_sets(job: TrainingJob) -> TrainingData:
    """Every training dataset's augmented set (``open_training_data``), joined; they must share one tile."""
    sets = [open_training_data(*paths, job.model.geometry) for paths in zip(job.augmented, job.volume, strict=True)]
    for path, data in zip(job.augmented[1:], sets[1:]):
        if data.attrs["input_size"] != sets[0].attrs["input_size"]:
            raise InputDataError(
                f"{path}: tiles of {data.attrs['input_size']} px, not the {sets[0].attrs['input_size']} px of "
                f"{job.augmented[0]}; the datasets of one training need the same tile"
            )
    return TrainingData(sets)


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


def report_fine_tuning(record: dict | None) -> None:
    """Say in the log what fine-tuning gained over the starting model, and what to do when it did not pay."""
    if record is None:
        return
    gained = (
        f"validation V_rand {record['zero_shot_v_rand']:.4f} before fine-tuning (zero-shot), best "
        f"{record['best_v_rand']:.4f} at step {record['best_step']}, level from step {record['plateau_step']}"
    )
    if record["best_step"] == 0:
        advice = record.get("next_step") or "train from scratch"
        log.warning(
            "fine-tuning did not improve on the starting model (%s): it keeps the starting weights; %s", gained, advice
        )
    elif record.get("next_step"):
        log.warning("fine-tuning: %s; %s: %s", gained, record["verdict"], record["next_step"])
    else:
        log.info("fine-tuning: %s", gained)


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
    keep_freed_memory()
    data = open_training_sets(job)
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
        metadata["training"]["tta"] = choose_tta(job, setup, trainer)
        report_fine_tuning(metadata["training"]["fine_tuning"])
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
