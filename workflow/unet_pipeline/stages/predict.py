"""Prediction stage: foreground probabilities of a whole volume, block by block.

The volume is processed one output chunk at a time. For each chunk the input
window it needs (the chunk plus the network's context and the last tile's
overshoot, mirrored at section borders) is read from Zarr, predicted with the
overlap-tile strategy (``TilePredictor.region``) and written as one chunk.
Peak memory therefore depends on the chunk, tile and batch sizes, never on the
volume. A reader thread fetches the next windows and a writer thread stores
finished chunks while the model computes, so the GPU (or the CPU's cores) is not
left waiting for I/O.

Restarts: chunks are written into a work store beside the output, and a marker
file per chunk is created only after its chunk is stored. A rerun with the same
model and input skips every marked chunk; a half-written chunk has no marker and
is computed again. The work store is renamed to the output when all chunks are
done, so Snakemake never sees a partial prediction as finished.

Shards (scale-out): ``prepare_prediction`` creates the work store once,
``predict_shard`` fills one of N disjoint, contiguous runs of chunks
(``shard_blocks``; chunk-aligned, so shard jobs never write the same chunk), and
``finish_prediction`` checks that every chunk is marked, writes the pyramid and
provenance and renames the store. Each chunk is computed from the same input
window whatever the shard, so the output is bit-identical for any N;
``predict_volume`` is the one-shard case.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..core.atomic import atomic_file
from ..core.checksums import sha256_of_file
from ..core.defaults import defaults_from_schema
from ..core.errors import InputDataError, PipelineError
from ..core.progress import Progress
from ..data import volume_store
from ..data.mirror import read_mirrored
from ..data.volume_store import PROBABILITY_DTYPES, decode_probability
from ..inference import tile_choice
from ..inference.onnx_network import onnx_network, resolved_runtime
from ..inference.overlap_tile import TilePredictor
from ..inference.work_store import WorkStore
from ..models.devices import amp_dtype, pick_device
from ..models.unet import load_model
from ..transforms import normalisation

log = logging.getLogger(__name__)

PREFETCH_BLOCKS = 2


def open_image(path, key: str | None = None):
    """The image array to predict: a dataset's volume store, a plain Zarr array, or ``key`` in a group."""
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as error:
        raise InputDataError(f"{path}: not a readable Zarr store: {error}") from error
    if isinstance(node, zarr.Group):
        node = node[key or volume_store.IMAGE_PATH]
    if node.ndim not in (2, 3):
        raise InputDataError(f"{path}: expected a 2D or 3D image (z, y, x), found shape {node.shape}")
    if node.dtype != np.uint8:
        raise InputDataError(
            f"{path}: expected uint8 gray values, found dtype {node.dtype} (ingest converts other types)"
        )
    return node


def _window_reader(image, z: int, region, predictor: TilePredictor):
    """Read once the mirrored input window a block needs; return a tile reader over it."""
    rows, cols = predictor.input_extent(region)
    window = read_mirrored(image, z, rows, cols)

    def read(tile_rows: np.ndarray, tile_cols: np.ndarray) -> np.ndarray:
        return window[np.ix_(tile_rows - rows[0], tile_cols - cols[0])]

    return read


NORMALISATIONS = ("training", "volume")


@dataclass(frozen=True)
@defaults_from_schema("prediction")
class PredictionOptions:
    """How a volume is predicted (the ``prediction:`` section of the config, less ``shards`` and
    ``submission_tiff``, which the workflow handles; defaults: the schema).

    ``input_size`` None: measured on the device when the prediction starts (``tile_choice``), the same for
    all its shard jobs; any legal size works. ``memory_mb``: the job's memory, which bounds that choice. ``dtype``: the stored probability, uint8 (x255) or float16. ``image_key``: the array inside
    a Zarr group (default, the volume store's image). ``normalisation``: ``training`` (the training set's
    mean and std) or ``volume`` (fitted to this volume's gray-value range, ``normalisation.for_volume``).
    """

    batch_size: int
    device: str
    amp: str
    tta: bool | str
    dtype: str
    input_size: int | None
    normalisation: str
    compile: bool
    runtime: str
    threads: int = 1  # the job's, not the config's
    image_key: str | None = None
    memory_mb: int | None = None

    def __post_init__(self):
        if self.dtype not in PROBABILITY_DTYPES:
            raise PipelineError(f"output dtype must be one of {PROBABILITY_DTYPES}, not {self.dtype!r}")
        if self.tta not in (True, False, "auto"):
            raise PipelineError(f"tta must be true, false or auto, not {self.tta!r}")
        if self.normalisation not in NORMALISATIONS:
            raise PipelineError(f"normalisation must be one of {NORMALISATIONS}, not {self.normalisation!r}")


def prediction_signature(model_path, image, model_metadata: dict, options: PredictionOptions) -> str:
    """What a partial prediction must match to be continued (what its first job chose is kept in the work store)."""
    described = {
        "model": model_metadata,
        "model_sha256": sha256_of_file(model_path),
        "shape": list(image.shape),
        "chunks": list(image.chunks),
        "tta": options.tta,
        "dtype": options.dtype,
        "input_size": options.input_size,
        "normalisation": options.normalisation,
        "runtime": options.runtime,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()


def resolved_tta(tta: bool | str, metadata: dict) -> bool:
    """The configured test-time augmentation; ``auto``: what the model chose on its validation sections when it
    was trained (``training.validation.tta_choice``), on for a model that records no choice."""
    if tta != "auto":
        return bool(tta)
    choice = (metadata.get("training") or {}).get("tta")
    return True if choice is None else bool(choice["chosen"])


def load_predictor(model_path, options: PredictionOptions) -> tuple[TilePredictor, dict]:
    """The trained network as a ``TilePredictor`` with the options' device, precision and tiles; its metadata."""
    torch.set_num_threads(max(options.threads, 1))
    device = pick_device(options.device)
    model, metadata = load_model(model_path, device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    predictor = TilePredictor(
        model,
        model.config.geometry,
        options.input_size or metadata["input_size"],
        metadata["normalisation"],
        device,
        amp_dtype(options.amp, device),
        options.batch_size,
        resolved_tta(options.tta, metadata),
    )
    return predictor, metadata


def predict_blocks(predictor: TilePredictor, image, work: WorkStore, blocks, dtype: str) -> None:
    """Predict ``blocks`` of a (z, y, x) image into the work store, overlapping reads, compute and writes.

    A reader thread prefetches the next windows and a writer thread stores finished chunks; at most
    ``PREFETCH_BLOCKS`` wait on either side, which bounds memory. On the device path (CUDA) a chunk's
    probabilities stay on the device until the writer thread copies them back, so the main thread goes on
    to queue the next chunk's work while they travel.
    """

    def fetch(block):
        z, top, bottom, left, right = block
        return block, _window_reader(image, z, (top, bottom, left, right), predictor)

    progress = Progress(len(blocks), f"predict {work.out_path.name}: chunks", log)
    with ThreadPoolExecutor(max_workers=2) as readers, ThreadPoolExecutor(max_workers=1) as writer:
        pending = [readers.submit(fetch, block) for block in blocks[:PREFETCH_BLOCKS]]
        writes = []
        for index in range(len(blocks)):
            block, read = pending.pop(0).result()
            if index + PREFETCH_BLOCKS < len(blocks):
                pending.append(readers.submit(fetch, blocks[index + PREFETCH_BLOCKS]))
            if predictor.stitches_on_device:
                probability = predictor.region_tensor(read, block[1:])
            else:
                probability = predictor.region(read, block[1:])
            writes.append(writer.submit(_store, work, block, probability, dtype))
            progress.update()
            while writes and (writes[0].done() or len(writes) > PREFETCH_BLOCKS):
                writes.pop(0).result()  # re-raises a failed write; bounds the chunks waiting in memory
        for write in writes:
            write.result()


def _store(work: WorkStore, block, probability, dtype: str) -> None:
    """The writer thread's part: a chunk's probabilities, copied back from the device if they are there, stored."""
    if isinstance(probability, torch.Tensor):
        probability = probability.cpu().numpy()
    work.store(block, probability, dtype)


@dataclass(frozen=True)
class _Run:
    """What one prediction job opens once: the predictor, model metadata, (z, y, x) image and work store."""

    model_path: Path
    image_path: Path
    options: PredictionOptions
    predictor: TilePredictor
    metadata: dict
    image: object
    work: WorkStore


def own_normalisation(metadata: dict, image_path) -> dict | None:
    """A model trained on several datasets: the normalisation of the one whose image this volume store holds
    (``normalisations``, keyed by the image's pixel checksum); None for a model of one dataset, or another
    volume (it is predicted with the model's reference normalisation)."""
    import zarr

    by_image = metadata.get("normalisations") or {}
    if len(by_image) < 2:
        return None
    store = zarr.open(str(image_path), mode="r")
    if not isinstance(store, zarr.Group) or volume_store.PROVENANCE_KEY not in store.attrs:
        return None
    return by_image.get(volume_store.image_id(volume_store.provenance(store)))


# Beyond this factor between a volume's pixel size and the model's training pixel size the log warns: at 2x a
# model scored far better on the volume resampled to its pixel size (benchmarks/resampling.py).
MAX_PIXEL_SIZE_RATIO = 1.25
NANOMETERS_PER = {"angstrom": 0.1, "nanometer": 1.0, "micrometer": 1000.0, "millimeter": 1e6}


def _pixel_nm(record: dict | None) -> np.ndarray | None:
    """The (y, x) pixel size in nanometres of a provenance's voxel size and unit; None where either is unknown."""
    if not record or record.get("voxel_size") is None or record.get("unit") not in NANOMETERS_PER:
        return None
    return np.asarray(record["voxel_size"][1:], np.float64) * NANOMETERS_PER[record["unit"]]


def pixel_size_check(metadata: dict, source_info: dict | None) -> dict | None:
    """The volume's (y, x) pixel size against each training dataset's (the model's ``data.voxel_sizes``).

    Returns:
        None where either side has no known pixel size (no voxel size configured, a unit not in
        ``NANOMETERS_PER``, a model from before they were recorded, an input that is not a volume store);
        else {"volume_nm": [y, x], "training_nm": {dataset: [y, x]}, "ratio": the volume's over the closest
        training dataset's, per axis, "matches": every ratio within ``MAX_PIXEL_SIZE_RATIO``}.
    """
    volume = _pixel_nm(source_info)
    trained = {name: _pixel_nm(record) for name, record in (metadata.get("data") or {}).get("voxel_sizes", {}).items()}
    trained = {name: size for name, size in trained.items() if size is not None}
    if volume is None or not trained:
        return None
    closest = min(trained.values(), key=lambda size: float(np.abs(np.log(volume / size)).max()))
    ratio = volume / closest
    matches = bool(np.all((ratio <= MAX_PIXEL_SIZE_RATIO) & (ratio >= 1 / MAX_PIXEL_SIZE_RATIO)))
    training = {name: size.tolist() for name, size in trained.items()}
    return {"volume_nm": volume.tolist(), "training_nm": training, "ratio": ratio.round(4).tolist(), "matches": matches}


def warn_pixel_size(check: dict | None, image_path) -> None:
    """Log when a volume's pixels differ from the model's training pixels by more than ``MAX_PIXEL_SIZE_RATIO``."""
    if check is None or check["matches"]:
        return
    log.warning(
        "%s: pixels of %s nm (y, x), %s times those the model was trained on (%s nm); it predicts best at its "
        "training pixel size: give the dataset `resample_to` (config/README.md, 'Datasets'), or fine-tune on it",
        image_path,
        check["volume_nm"],
        check["ratio"],
        check["training_nm"],
    )


def choose_settings(predictor: TilePredictor, metadata: dict, image, work: WorkStore, options, own=None) -> dict:
    """What the first job of a prediction decides for all of them: the normalisation (the training set's, its
    own training dataset's ``own``, or fitted to a sample of the volume) and the tile size (configured, or
    measured on this job's device)."""
    used = {"mode": "training", **metadata["normalisation"]}
    if own is not None and options.normalisation != "volume":
        used = {"mode": "training dataset", **own}
        log.info("normalisation of its training dataset %s: %s", own["dataset"], used)
    if options.normalisation == "volume":
        robust = normalisation.percentiles(normalisation.sample_histogram(image))
        fitted = normalisation.for_volume(metadata["normalisation"], robust)
        used = {"mode": "volume", **fitted, "volume_percentiles": robust, "training": metadata["normalisation"]}
        log.info("normalisation fitted to the volume: %s", used)
    size = (
        options.input_size
        or tile_choice.choose(predictor, metadata["input_size"], work.chunks[1:], options.memory_mb)["input_size"]
    )
    return {"input_size": int(size), "normalisation": used}


def _open_work(model_path, image_path, out_path, options: PredictionOptions, create: bool) -> _Run:
    predictor, metadata = load_predictor(model_path, options)
    # auto resolved: the signature and the output say what ran
    options = replace(options, tta=predictor.tta, runtime=resolved_runtime(options.runtime, predictor.device))
    image = open_image(image_path, options.image_key)
    image3d = image if image.ndim == 3 else _AsStack(image)
    signature = prediction_signature(model_path, image3d, metadata, options)
    work = WorkStore(out_path, image3d.shape, options.dtype, signature, create)
    settings = work.settings
    if settings is None:  # a new work store: this job decides for every job of the prediction
        if not create:  # a shard job: its setup job was stopped before it decided
            raise PipelineError(f"{work.path}: its setup job did not finish; rerun it")
        warn_pixel_size(pixel_size_check(metadata, _source_provenance(image_path)), image_path)
        try:
            own = own_normalisation(metadata, image_path)
            settings = choose_settings(predictor, metadata, image3d, work, options, own)
            work.settings = settings
        except BaseException:
            shutil.rmtree(work.path)  # nothing is predicted into it yet: leave no work store behind
            raise
    used = {key: settings["normalisation"][key] for key in ("mean", "std")}
    predictor = replace(predictor, input_size=settings["input_size"], normalisation=used)
    if options.compile and predictor.device.type == "cuda":  # after the tile choice, which measures other sizes
        predictor = replace(predictor, model=torch.compile(predictor.model))
    return _Run(Path(model_path), Path(image_path), options, predictor, metadata, image3d, work)


def prepare_prediction(model_path, image_path, out_path, options: PredictionOptions | None = None) -> Path:
    """Create (or keep, when it matches) the work store that shard jobs predict into; returns its path."""
    return _open_work(model_path, image_path, out_path, options or PredictionOptions(), create=True).work.path


def _predict(run: _Run, shard: int, shards: int) -> int:
    predictor, work = run.predictor, run.work
    if run.options.runtime == "onnxruntime":  # only jobs that predict export: not a setup or finishing job
        # exported for the chosen tile (the tile choice measured PyTorch's speeds)
        network = onnx_network(predictor.model, predictor.input_size, torch.get_num_threads(), run.model_path)
        predictor = replace(predictor, model=network)
    blocks = work.pending(shard, shards)
    tiles = f"tiles {predictor.input_size} -> {predictor.geometry.output_size(predictor.input_size)}"
    how = f"{predictor.device} ({run.options.runtime})"
    where = f"{run.model_path.name} on {how}, {tiles}{', TTA' if run.options.tta else ''}"
    log.info(
        "shard %d of %d: predicting %d chunks of %s with %s", shard + 1, shards, len(blocks), run.image.shape, where
    )
    started = time.perf_counter()
    with work.writer(shard):
        predict_blocks(predictor, run.image, work, blocks, run.options.dtype)
        work.record(shard, time.perf_counter() - started, len(blocks))
    return len(blocks)


def _finish(run: _Run) -> dict:
    predictor, work, options = run.predictor, run.work, run.options
    missing = work.pending()
    if missing:
        raise PipelineError(f"{work.path}: {len(missing)} chunks are not predicted yet (first: {missing[0]}); rerun")
    records = work.records()
    info = {"model": str(run.model_path), "model_metadata": run.metadata, "input": str(run.image_path)}
    info |= {
        "input_shape": list(run.image.shape),
        "probability_of": "foreground (cell interior)",
        "dtype": options.dtype,
    }
    info["encoding"] = "probability * 255, rounded" if options.dtype == "uint8" else "probability"
    info |= {"tta": options.tta, "input_size": predictor.input_size, "device": str(predictor.device)}
    info["runtime"] = options.runtime
    info["normalisation"] = work.settings["normalisation"]
    info |= {"tile_step": predictor.geometry.tile_step(predictor.input_size), "shards": len(records)}
    work.finish(output_attrs(info, run.image_path, work.levels))
    # How long it took and how many chunks this run computed (fewer after a restart) go to the log and the
    # caller, not into the store: an output is the same bytes however its run went.
    info["seconds"] = sum(r["seconds"] for r in records)
    info["chunks_computed"] = sum(r["chunks_computed"] for r in records)
    megavoxels = np.prod(run.image.shape) / 1e6
    log.info("wrote %s: %.1f megavoxels in %.1f s", work.out_path, megavoxels, info["seconds"])
    log.info("%s: %d chunks computed by this run", work.out_path, info["chunks_computed"])
    return info


def predict_shard(model_path, image_path, out_path, shard: int = 0, shards: int = 1, options=None) -> int:
    """Predict the unfinished chunks of one shard into the existing work store; returns how many were computed.

    Shards are disjoint, chunk-aligned runs of chunks (``shard_blocks``), so shard jobs never write the
    same chunk; a rerun after a kill computes only the shard's chunks without a marker.
    """
    options = options or PredictionOptions()
    return _predict(_open_work(model_path, image_path, out_path, options, create=shards == 1), shard, shards)


def finish_prediction(model_path, image_path, out_path, options: PredictionOptions | None = None) -> dict:
    """Check that every chunk is predicted, write pyramid and provenance, and rename the work store into place.

    Returns:
        The output's provenance attributes.
    """
    return _finish(_open_work(model_path, image_path, out_path, options or PredictionOptions(), create=False))


def predict_volume(model_path, image_path, out_path, options: PredictionOptions | None = None, **overrides) -> dict:
    """Predict every chunk of a (z, y, x) or (y, x) uint8 Zarr image into an OME-Zarr probability map.

    Args:
        model_path: a trained ``model.pt``.
        image_path: a dataset's volume store, a Zarr array, or a group holding ``options.image_key``.
        out_path: the output store, (z, y, x) foreground probabilities; written beside it first and renamed
            when complete, so a killed run leaves no output and a rerun continues its finished chunks.
        options: ``PredictionOptions``; keyword ``overrides`` replace single fields.

    Returns:
        The output's provenance attributes. (The one-shard case of ``predict_shard`` and ``finish_prediction``,
        which the workflow runs as separate jobs for ``prediction.shards`` > 1; here model and store open once.)
    """
    run = _open_work(model_path, image_path, out_path, replace(options or PredictionOptions(), **overrides), True)
    _predict(run, 0, 1)
    return _finish(run)


def output_attrs(info: dict, image_path, levels: int = 1) -> dict:
    """OME metadata (``levels`` pyramid levels) and provenance of the output; the input's checksum and voxel size."""
    source_info = _source_provenance(image_path)
    if source_info:
        info["input_pixel_sha256"] = volume_store.image_id(source_info)  # pixel sha256, or the link it uses
        info["pixel_size"] = pixel_size_check(info.get("model_metadata") or {}, source_info)
        voxel_size, unit = source_info["voxel_size"], source_info["unit"]
    else:
        log.warning(
            "%s is not an ingested volume store: the prediction records no input checksum and no voxel size", image_path
        )
        voxel_size, unit = None, None
    ome = volume_store.image_attrs("probability", voxel_size, unit, levels)
    return {"ome": ome, volume_store.PROVENANCE_KEY: info}


class _AsStack:
    """A 2D array seen as a one-section (1, y, x) stack."""

    def __init__(self, array):
        self.array = array
        self.shape = (1, *array.shape)
        self.chunks = (1, *array.chunks)
        self.dtype = array.dtype

    def __getitem__(self, key):
        return self.array[key[1:]]


def _source_provenance(image_path) -> dict | None:
    """The pipeline provenance of the input when it is an ingested volume store; None for other Zarr inputs."""
    import zarr

    node = zarr.open(str(image_path), mode="r")
    if isinstance(node, zarr.Group) and volume_store.PROVENANCE_KEY in node.attrs:
        return volume_store.provenance(node)
    return None


def write_submission_tiff(prediction_path, tiff_path) -> None:
    """The ISBI 2012 submission format: a multi-page float32 TIFF of probabilities in [0, 1].

    Sections are written one page at a time (memory stays at one section) into a
    temporary file that is renamed into place when complete.
    """
    import tifffile

    probabilities = volume_store.open_store(prediction_path)[volume_store.IMAGE_PATH]
    with atomic_file(tiff_path) as tmp, tifffile.TiffWriter(tmp) as tiff:
        for section in range(probabilities.shape[0]):
            tiff.write(decode_probability(probabilities[section]), photometric="minisblack", contiguous=True)
