"""The work store of a prediction: the output being written, one marker per finished chunk, shard locks."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..core.atomic import lock_file, remove_stale
from ..core.errors import PipelineError
from ..data import volume_store
from ..data.pyramid import level_shapes, write_pyramid
from ..data.volume_store import encode_probability

log = logging.getLogger(__name__)


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
        self.lock = self.path.with_name(self.path.name + ".lock")  # beside the store: it outlives a discard
        remove_stale(self.path.parent, self._stale_markers_prefix)
        if self.path.exists() and self._signature() != signature:
            if not create:  # a shard job must not discard what other shards write into
                raise PipelineError(f"{self.path}: belongs to another model, input or option set; rerun its setup")
            self._discard()
        if not self.path.exists():
            if not create:
                raise PipelineError(f"{self.path}: no work store to predict into; its setup job has not run")
            root = zarr.open_group(str(self.path), mode="w", zarr_format=3)
            volume_store.create_level(root, volume_store.IMAGE_PATH, shape, self.chunks, dtype)
            root.attrs["signature"] = signature
        self.done.mkdir(exist_ok=True)  # also where a kill took it: its chunks are then computed again
        self.array = volume_store.open_store(self.path, mode="r+")[volume_store.IMAGE_PATH]

    def _discard(self) -> None:
        """Delete a work store of another signature, holding its lock: a job still writing into it (it holds the
        lock shared, ``writer``) is not pulled from under, and this job fails instead."""
        handle = lock_file(self.lock, exclusive=True)
        if handle is None:
            raise PipelineError(
                f"{self.path}: belongs to another model, input or option set, and a job is still writing into it; "
                "wait for that job or cancel it, then rerun"
            )
        with handle:
            log.info("discarding %s: it belongs to another model or input", self.path)
            shutil.rmtree(self.path)

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
        supports too): a killed job's lock goes with its process, and the file names the job that held it. The
        store's own lock is held shared meanwhile, so that no job of another signature discards the store."""
        import fcntl

        store_lock = lock_file(self.lock, exclusive=False)
        if store_lock is None:
            raise PipelineError(f"{self.path}: being discarded by a job of another model or input; rerun later")
        lock = self.done / f"shard-{shard}.lock"
        with store_lock, open(lock, "a+") as handle:
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
        self.lock.unlink(missing_ok=True)
        stale = self.path.parent / f"{self._stale_markers_prefix}{uuid.uuid4().hex[:8]}"
        os.replace(self.out_path / ".done", stale)
        shutil.rmtree(stale, ignore_errors=True)


def job_id() -> str:
    """Which job this is, for a lock's holder: the SLURM job id where there is one, and host and process."""
    slurm = os.environ.get("SLURM_JOB_ID")
    where = f"process {os.getpid()} on {socket.gethostname()}"
    return f"SLURM job {slurm} ({where})" if slurm else where
