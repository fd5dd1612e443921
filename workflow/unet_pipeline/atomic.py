"""Outputs that appear whole or not at all: every stage writes a result beside its final path and renames it.

An interrupted stage (a crash, a kill, a failed check) therefore never leaves an
output that looks finished to Snakemake or to a rerun, and leaves no temporary
file behind either.
"""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_store(final: str | os.PathLike):
    """Yield a temporary path to write a Zarr store into; rename it to ``final`` on success.

    On any exception the temporary store is deleted and ``final`` is left
    untouched, so no half-written store remains.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
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
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
