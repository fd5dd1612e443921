"""Outputs that appear whole or not at all: every stage writes a result beside its final path and renames it.

An interrupted stage (a crash, a failed check) therefore never leaves an output
that looks finished to Snakemake or to a rerun, and leaves no temporary file
behind either. A killed one (SIGKILL, a node lost) cannot clean up: the next
write of the same output removes the temporaries such a kill left
(``remove_stale``), so a copied TB volume does not leak. Files are flushed to
disk before the rename, so a node crash cannot leave a truncated file under the
final name.
"""

from __future__ import annotations

import glob
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path

TMP_MARK = ".tmp-"


def remove_stale(folder: Path, prefix: str) -> None:
    """Remove what a killed run left in ``folder`` under names starting with ``prefix`` (files or folders)."""
    for leftover in Path(folder).glob(f"{glob.escape(prefix)}*"):
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    """Flush a file's bytes, and the folder entry that names it, to disk."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def atomic_store(final: str | os.PathLike):
    """Yield a temporary path to write a Zarr store into; rename it to ``final`` on success.

    On any exception the temporary store is deleted and ``final`` is left
    untouched, so no half-written store remains.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(final.parent, f".{final.name}{TMP_MARK}")
    tmp = final.with_name(f".{final.name}{TMP_MARK}{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


@contextmanager
def atomic_file(final: str | os.PathLike):
    """Yield a temporary path beside ``final`` to write one file into; rename it to ``final`` on success.

    On any exception the temporary file is removed and ``final`` is left untouched.
    """
    final = Path(final)
    remove_stale(final.parent, f".{final.name}{TMP_MARK}")
    tmp = final.with_name(f".{final.name}{TMP_MARK}{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, final)
        _fsync_folder(final.parent)
    finally:
        tmp.unlink(missing_ok=True)
