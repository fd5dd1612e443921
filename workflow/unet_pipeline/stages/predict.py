"""Prediction stage: foreground probabilities of a whole volume, block by block.

The volume is processed one output chunk at a time. For each chunk the input
window it needs (the chunk plus the network's context and the last tile's
overshoot, mirrored at section borders) is read from Zarr, predicted with the
overlap-tile strategy (``overlap_tile.predict_region``) and written as one chunk.
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
import os
import shutil
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..core.atomic import atomic_file, remove_stale
from ..core.checksums import sha256_of_file
from ..core.errors import InputDataError, PipelineError
from ..core.progress import Progress
from ..data import volume_store
from ..data.mirror import read_mirrored
from ..data.pyramid import level_shapes, write_pyramid
from ..data.volume_store import PROBABILITY_DTYPES, decode_probability, encode_probability
from ..inference import tile_choice
from ..inference.overlap_tile import TilePredictor
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
class PredictionOptions:
    """How a volume is predicted (the ``prediction:`` section of the config, less ``submission_tiff``).

    ``input_size`` None: measured on the device when the prediction starts (``tile_choice``), the same for
    all its shard jobs; any legal size works. ``memory_mb``: the job's memory, which bounds that choice. ``dtype``: the stored probability, uint8 (x255) or float16. ``image_key``: the array inside
    a Zarr group (default, the volume store's image). ``normalisation``: ``training`` (the training set's
    mean and std) or ``volume`` (fitted to this volume's gray-value range, ``normalisation.for_volume``).
    """

    batch_size: int = 4
    device: str = "auto"
    amp: str = "bf16"
    tta: bool = False
    dtype: str = "uint8"
    threads: int = 1
    input_size: int | None = None
    image_key: str | None = None
    normalisation: str = "training"
    memory_mb: int | None = None

    def __post_init__(self):
        if self.dtype not in PROBABILITY_DTYPES:
            raise PipelineError(f"output dtype must be one of {PROBABILITY_DTYPES}, not {self.dtype!r}")
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
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()


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
        options.tta,
    )
    return predictor, metadata


def work_path(out_path) -> Path:
    """Where a prediction is written before it is complete: beside the output, hidden."""
    out_path = Path(out_path)
    return out_path.with_name(f".{out_path.name}.partial")


def shard_blocks(blocks: list, shard: int, shards: int) -> list:
    """Shard ``shard`` of ``shards``: a contiguous run of the chunks in storage order, disjoint from the others."""
    if not 0 <= shard < shards:
        raise PipelineError(f"shard {shard} does not exist: shards are 0 to {shards - 1}")
    bounds = np.linspace(0, len(blocks), shards + 1).round().astype(int)
    return blocks[bounds[shard] : bounds[shard + 1]]


class WorkStore:
    """The output being written: a Zarr store beside the output, one marker file per finished chunk.

    A work store of another model, input or option set (its signature differs) is discarded; one that
    matches is continued, skipping every marked chunk. ``finish`` renames it to the output.
    """

    def __init__(self, out_path, shape, dtype: str, signature: str, create: bool = True):
        import zarr

        self.out_path = Path(out_path)
        self.path = work_path(out_path)
        self.done = self.path / ".done"
        self.shape, self.chunks = shape, (1, *volume_store.section_chunks(shape)[1:])
        remove_stale(self.path.parent, self._stale_markers_prefix)
        if self.path.exists() and self._signature() != signature:
            if not create:  # a shard job must not discard what other shards write into
                raise PipelineError(f"{self.path}: belongs to another model, input or option set; rerun its setup")
            log.info("discarding %s: it belongs to another model or input", self.path)
            shutil.rmtree(self.path)
        if not self.path.exists():
            if not create:
                raise PipelineError(f"{self.path}: no work store to predict into; its setup job has not run")
            root = zarr.open_group(str(self.path), mode="w", zarr_format=3)
            volume_store.create_level(root, volume_store.IMAGE_PATH, shape, self.chunks, dtype)
            root.attrs["signature"] = signature
        self.done.mkdir(exist_ok=True)  # also where a kill took it: its chunks are then computed again
        self.array = volume_store.open_store(self.path, mode="r+")[volume_store.IMAGE_PATH]

    @property
    def settings(self) -> dict | None:
        """The tile size and normalisation every job of this prediction uses (``choose_settings``; None until the
        job that created the store chose them)."""
        return volume_store.open_store(self.path).attrs.get("settings")

    @settings.setter
    def settings(self, chosen: dict) -> None:
        volume_store.open_store(self.path, mode="r+").attrs["settings"] = chosen

    def _signature(self) -> str | None:
        """The signature the work store was created with; None when it has none (a store of an older version).

        Raises:
            PipelineError: the store cannot be read (a file system error): the work is kept for a retry, since
                throwing it away would lose what every job computed so far.
        """
        metadata = self.path / "zarr.json"
        try:
            text = metadata.read_text()
        except FileNotFoundError:
            return None  # not a Zarr group: nothing of ours to keep
        except OSError as error:
            raise PipelineError(
                f"{self.path}: cannot read the work store's metadata ({error}); it is kept, retry when the file "
                "system answers"
            ) from error
        try:
            return json.loads(text).get("attributes", {}).get("signature")
        except (ValueError, AttributeError):
            return None  # damaged metadata: no prediction can be continued from it

    @property
    def _stale_markers_prefix(self) -> str:
        return f".{self.out_path.name}.done-"

    def blocks(self) -> list[tuple[int, int, int, int, int]]:
        """(z, top, bottom, left, right) of every output chunk, in storage order."""
        _, height, width = self.shape
        return [
            (z, top, min(top + self.chunks[1], height), left, min(left + self.chunks[2], width))
            for z in range(self.shape[0])
            for top in range(0, height, self.chunks[1])
            for left in range(0, width, self.chunks[2])
        ]

    def _marker(self, block) -> Path:
        return self.done / f"{block[0]}_{block[1]}_{block[3]}"

    def pending(self, shard: int = 0, shards: int = 1) -> list[tuple[int, int, int, int, int]]:
        """The unfinished chunks of ``shard`` (of ``shards`` contiguous, disjoint runs of chunks)."""
        return [block for block in shard_blocks(self.blocks(), shard, shards) if not self._marker(block).exists()]

    @contextmanager
    def writer(self, shard: int):
        """Hold the lock of ``shard`` while this job writes it; a second writer (an old cluster job still running
        after Snakemake was restarted) is refused. The lock is the file system's (``fcntl.lockf``, which NFS
        supports too): a killed job's lock goes with its process, and the file names the job that held it."""
        import fcntl

        lock = self.done / f"shard-{shard}.lock"
        with open(lock, "a+") as handle:
            try:
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise PipelineError(
                    f"{self.path}: shard {shard} is being written by {holder}; wait for it or cancel it"
                ) from error
            handle.seek(0)
            handle.truncate()
            handle.write(job_id())
            handle.flush()
            yield

    def record(self, shard: int, seconds: float, chunks: int) -> None:
        """Note what one shard job computed (summed into the provenance by ``finish_prediction``)."""
        (self.done / f"shard-{shard}.json").write_text(json.dumps({"seconds": seconds, "chunks_computed": chunks}))

    def records(self) -> list[dict]:
        return [json.loads(path.read_text()) for path in sorted(self.done.glob("shard-*.json"))]

    def store(self, block, probability: np.ndarray, dtype: str) -> None:
        """Write one chunk, then its marker (a chunk without a marker is computed again)."""
        z, top, bottom, left, right = block
        self.array[z : z + 1, top:bottom, left:right] = encode_probability(probability, dtype)[None]
        self._marker(block).touch()

    @property
    def levels(self) -> int:
        """Levels of the output's multiscale pyramid (``pyramid.level_shapes``)."""
        return 1 + len(level_shapes(self.shape, self.chunks))

    def finish(self, attrs: dict) -> None:
        """Write the pyramid and the output's metadata, then rename the work store into place."""
        root = volume_store.open_store(self.path, mode="r+")
        level = 1
        while str(level) in root:  # levels of an interrupted finish
            del root[str(level)]
            level += 1
        write_pyramid(root, "mean")
        root.attrs.update(attrs)
        if self.out_path.exists():
            shutil.rmtree(self.out_path)
        # Rename first: removing a TB volume's chunk markers takes long enough for a scheduler to kill the job
        # there, and a work store without them cannot be finished. Two renames put the markers aside; what a
        # kill leaves of them, the next prediction job of this output removes.
        os.replace(self.path, self.out_path)
        stale = self.path.parent / f"{self._stale_markers_prefix}{uuid.uuid4().hex[:8]}"
        os.replace(self.out_path / ".done", stale)
        shutil.rmtree(stale, ignore_errors=True)


def predict_blocks(predictor: TilePredictor, image, work: WorkStore, blocks, dtype: str) -> None:
    """Predict ``blocks`` of a (z, y, x) image into the work store, overlapping reads, compute and writes.

    A reader thread prefetches the next windows and a writer thread stores finished chunks; at most
    ``PREFETCH_BLOCKS`` wait on either side, which bounds memory.
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
            writes.append(writer.submit(work.store, block, predictor.region(read, block[1:]), dtype))
            progress.update()
            while writes and (writes[0].done() or len(writes) > PREFETCH_BLOCKS):
                writes.pop(0).result()  # re-raises a failed write; bounds the chunks waiting in memory
        for write in writes:
            write.result()


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


def choose_settings(predictor: TilePredictor, metadata: dict, image, work: WorkStore, options) -> dict:
    """What the first job of a prediction decides for all of them: the normalisation (the training set's, or
    fitted to a sample of the volume) and the tile size (configured, or measured on this job's device)."""
    used = {"mode": "training", **metadata["normalisation"]}
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
    image = open_image(image_path, options.image_key)
    image3d = image if image.ndim == 3 else _AsStack(image)
    signature = prediction_signature(model_path, image3d, metadata, options)
    work = WorkStore(out_path, image3d.shape, options.dtype, signature, create)
    settings = work.settings
    if settings is None:  # a new work store: this job decides for every job of the prediction
        if not create:  # a shard job: its setup job was stopped before it decided
            raise PipelineError(f"{work.path}: its setup job did not finish; rerun it")
        try:
            settings = choose_settings(predictor, metadata, image3d, work, options)
            work.settings = settings
        except BaseException:
            shutil.rmtree(work.path)  # nothing is predicted into it yet: leave no work store behind
            raise
    used = {key: settings["normalisation"][key] for key in ("mean", "std")}
    predictor = replace(predictor, input_size=settings["input_size"], normalisation=used)
    return _Run(Path(model_path), Path(image_path), options, predictor, metadata, image3d, work)


def prepare_prediction(model_path, image_path, out_path, options: PredictionOptions | None = None) -> Path:
    """Create (or keep, when it matches) the work store that shard jobs predict into; returns its path."""
    return _open_work(model_path, image_path, out_path, options or PredictionOptions(), create=True).work.path


def _predict(run: _Run, shard: int, shards: int) -> int:
    predictor, work = run.predictor, run.work
    blocks = work.pending(shard, shards)
    tiles = f"tiles {predictor.input_size} -> {predictor.geometry.output_size(predictor.input_size)}"
    where = f"{run.model_path.name} on {predictor.device}, {tiles}{', TTA' if run.options.tta else ''}"
    log.info(
        "shard %d of %d: predicting %d chunks of %s with %s", shard + 1, shards, len(blocks), run.image.shape, where
    )
    started = time.perf_counter()
    with work.writer(shard):
        predict_blocks(predictor, run.image, work, blocks, run.options.dtype)
        work.record(shard, time.perf_counter() - started, len(blocks))
    return len(blocks)


def job_id() -> str:
    """Which job this is, for a lock's holder: the SLURM job id where there is one, and host and process."""
    slurm = os.environ.get("SLURM_JOB_ID")
    where = f"process {os.getpid()} on {socket.gethostname()}"
    return f"SLURM job {slurm} ({where})" if slurm else where


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
    info["normalisation"] = work.settings["normalisation"]
    info |= {"tile_step": predictor.geometry.tile_step(predictor.input_size), "shards": len(records)}
    info["seconds"] = sum(r["seconds"] for r in records)
    info["chunks_computed"] = sum(r["chunks_computed"] for r in records)
    work.finish(output_attrs(info, run.image_path, work.levels))
    log.info("wrote %s: %.1f megavoxels in %.1f s", work.out_path, np.prod(run.image.shape) / 1e6, info["seconds"])
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
