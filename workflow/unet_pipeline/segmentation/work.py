"""The work folder of a blockwise segmentation: what each finished step of each block left, so that a killed
run continues where it stopped (``blockwise``).

Beside the output, hidden: ``.{name}.work``. It holds Zarr arrays written block by block, each block followed
by a marker file, and small NumPy files (edge tables, partitions, piece keys) written whole and renamed into
place. A work folder of another input or option set (its signature differs) is discarded.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from ..core.atomic import lock_file
from ..core.errors import PipelineError
from ..data import volume_store

log = logging.getLogger(__name__)


class SegmentWork:
    """A blockwise segmentation's work folder (see the module docstring).

    Several jobs may fill one (``segmentation.shards``), each in its own blocks: each holds the folder's lock
    shared while it works. The job that creates the folder, or discards one of another signature, holds it
    exclusively meanwhile, so that nobody's work is pulled from under them.

    Args:
        out_path: the output the folder works towards (the folder lies beside it).
        signature: what its contents depend on (JSON-able).
        arrays: name -> (shape, chunks, dtype) of the Zarr work arrays, created with the folder.
    """

    def __init__(self, out_path, signature, arrays: dict):
        import fcntl

        out_path = Path(out_path)
        self._arrays = {}
        self.path = out_path.with_name(f".{out_path.name}.work")
        self.lock = self.path.with_name(self.path.name + ".lock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = lock_file(self.lock, exclusive=True)
        if self._handle is not None:  # nobody else works in it: make it ours, then share it
            self._prepare(signature, arrays)
            fcntl.lockf(self._handle, fcntl.LOCK_SH)
            return
        self._handle = open(self.lock, "a+")  # noqa: SIM115 (held for the job's life, closed by ``release``)
        fcntl.lockf(self._handle, fcntl.LOCK_SH)  # waits while a job creates it
        if self._signature() != signature:
            self.release()
            raise PipelineError(
                f"{self.path}: another job is segmenting into it with another input or option set; wait for it or "
                "cancel it, then rerun"
            )

    def _signature(self):
        stamp = self.path / "signature.json"
        try:
            return json.loads(stamp.read_text())
        except (OSError, ValueError):  # none, or damaged: nothing in the folder can be trusted to continue from
            return None

    def _prepare(self, signature, arrays: dict) -> None:
        """Discard a folder of another signature; create it with its arrays if there is none."""
        if self.path.exists() and self._signature() != signature:
            log.info("discarding %s: it belongs to another input or option set", self.path)
            shutil.rmtree(self.path)
        if self.path.exists():
            return
        root = volume_store.open_store(self.path, mode="w")  # a Zarr group for the arrays
        for name, (shape, chunks, dtype) in arrays.items():
            volume_store.create_level(root, name, shape, chunks, dtype)
        (self.path / "done").mkdir()
        self._write(self.path / "signature.json", lambda tmp: tmp.write_text(json.dumps(signature)))

    @staticmethod
    def _write(path: Path, write) -> None:
        """Write ``path`` through ``write(tmp)`` and a rename: a kill leaves the old file or none."""
        tmp = path.with_name(f"{path.stem}.tmp{path.suffix}")  # same suffix: np.savez appends .npz otherwise
        write(tmp)
        os.replace(tmp, path)

    def array(self, name: str):
        """The work array ``name``, for reading and writing (opened once)."""
        if name not in self._arrays:
            self._arrays[name] = volume_store.open_store(self.path, mode="r+")[name]
        return self._arrays[name]

    def marked(self, step: str, whole: str, block: int) -> bool:
        return (self.path / "done" / f"{step}-{whole}-{block}").exists()

    def mark(self, step: str, whole: str, block: int) -> None:
        (self.path / "done" / f"{step}-{whole}-{block}").touch()

    def saved(self, name: str) -> dict | None:
        """The arrays saved under ``name``, or None when that step has not finished."""
        path = self.path / f"{name}.npz"
        if not path.exists():
            return None
        with np.load(path) as arrays:
            return dict(arrays)

    def once(self, name: str, make) -> dict:
        """The arrays saved under ``name``; when that step has not finished, ``make()`` makes them (a dict of
        arrays) and they are saved before they are returned."""
        found = self.saved(name)
        if found is None:
            found = make()
            self.save(name, **found)
        return found

    def save(self, name: str, **arrays) -> None:
        path = self.path / f"{name}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._write(path, lambda tmp: np.savez(tmp, **arrays))

    def release(self) -> None:
        self._handle.close()

    def remove(self) -> None:
        """Delete the folder once the output is in place, unless another job still works in it, and release it."""
        import fcntl

        try:
            fcntl.lockf(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            log.warning("%s: left in place, another job holds it", self.path)
        else:
            shutil.rmtree(self.path, ignore_errors=True)
            self.lock.unlink(missing_ok=True)
        self.release()
