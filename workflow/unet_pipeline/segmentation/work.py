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
    """A blockwise segmentation's work folder (see the module docstring), held by one writer at a time."""

    def __init__(self, out_path, signature: str):
        out_path = Path(out_path)
        self.path = out_path.with_name(f".{out_path.name}.work")
        self.lock = self.path.with_name(self.path.name + ".lock")
        self._handle = lock_file(self.lock)
        if self._handle is None:
            raise PipelineError(f"{self.path}: another job is segmenting into it; wait for it or cancel it")
        stamp = self.path / "signature.json"
        if self.path.exists() and (not stamp.exists() or json.loads(stamp.read_text()) != signature):
            log.info("discarding %s: it belongs to another input or option set", self.path)
            shutil.rmtree(self.path)
        if not self.path.exists():
            volume_store.open_store(self.path, mode="w")  # a Zarr group for the arrays
            (self.path / "done").mkdir()
            self._write(stamp, lambda tmp: tmp.write_text(json.dumps(signature)))

    @staticmethod
    def _write(path: Path, write) -> None:
        """Write ``path`` through ``write(tmp)`` and a rename: a kill leaves the old file or none."""
        tmp = path.with_name(f"{path.stem}.tmp{path.suffix}")  # same suffix: np.savez appends .npz otherwise
        write(tmp)
        os.replace(tmp, path)

    def array(self, name: str, shape, chunks, dtype: str):
        """The work array ``name`` (created zero-filled on first use)."""
        import zarr

        root = zarr.open_group(str(self.path), mode="r+")
        if name not in root:
            return volume_store.create_level(root, name, shape, chunks, dtype)
        return root[name]

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

    def save(self, name: str, **arrays) -> None:
        path = self.path / f"{name}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._write(path, lambda tmp: np.savez(tmp, **arrays))

    def remove(self) -> None:
        """Delete the folder once the output is in place, and release it."""
        shutil.rmtree(self.path, ignore_errors=True)
        self.lock.unlink(missing_ok=True)
        self._handle.close()
