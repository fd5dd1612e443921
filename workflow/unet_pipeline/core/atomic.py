"""Outputs that appear whole or not at all: every stage writes a result beside its final path and renames it.

An interrupted stage (a crash, a failed check) therefore never leaves an output
that looks finished to Snakemake or to a rerun, and leaves no temporary file
behind either. A killed one (SIGKILL, a node lost) cannot clean up: the next
write of the same output removes the temporaries such a kill left
(``remove_stale``), so a copied TB volume does not leak. A writer holds a lock
on its temporary for as long as it writes (``claimed``), and the clean-up passes
over locked ones: two writers of one output (an old cluster job still running
after Snakemake was restarted) never delete each other's work. Files, and for a
store every file and folder in it, are flushed to disk before the rename, so a
node crash cannot leave a truncated output under the final name.
"""

from __future__ import annotations

import glob
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path

TMP_MARK = ".tmp-"
LOCK_SUFFIX = ".lock"
_HELD: set[str] = set()  # this process's claimed temporaries: POSIX locks do not keep a process from itself


def lock_file(path: Path, exclusive: bool = True):
    """An open handle on ``path`` holding its lock (``fcntl.lockf``, which NFS supports), or None when another
    process holds it."""
    import fcntl

    handle = open(path, "a+")  # noqa: SIM115 (the lock lives as long as the caller keeps the handle)
    try:
        fcntl.lockf(handle, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale(folder: Path, prefix: str) -> None:
    """Remove what a killed run left in ``folder`` under names starting with ``prefix`` (files or folders).

    A temporary whose lock a running writer holds (``claimed``) is not stale and stays.
    """
    for leftover in sorted(Path(folder).glob(f"{glob.escape(prefix)}*")):
        if leftover.name.endswith(LOCK_SUFFIX) or str(leftover) in _HELD:
            continue
        lock = leftover.with_name(leftover.name + LOCK_SUFFIX)
        handle = lock_file(lock) if lock.exists() else None
        if lock.exists() and handle is None:
            continue  # its writer is alive
        _remove(leftover)
        if handle is not None:
            lock.unlink(missing_ok=True)
            handle.close()
    for lock in Path(folder).glob(f"{glob.escape(prefix)}*{LOCK_SUFFIX}"):  # locks whose temporary is gone
        owner = lock.with_name(lock.name.removesuffix(LOCK_SUFFIX))
        handle = None if str(owner) in _HELD or owner.exists() else lock_file(lock)
        if handle is not None:
            lock.unlink(missing_ok=True)
            handle.close()


@contextmanager
def claimed(final: Path, mark: str = TMP_MARK):
    """Yield a fresh temporary path beside ``final``, locked while the context runs, and remove whatever is
    written there when it ends; a killed run's temporaries of ``final`` go first (``remove_stale``)."""
    final = Path(final)
    remove_stale(final.parent, f".{final.name}{mark}")
    tmp = final.with_name(f".{final.name}{mark}{uuid.uuid4().hex[:8]}")
    lock = tmp.with_name(tmp.name + LOCK_SUFFIX)
    handle = lock_file(lock)  # a fresh name: nobody else holds it
    _HELD.add(str(tmp))
    try:
        yield tmp
    finally:
        _remove(tmp)
        lock.unlink(missing_ok=True)
        _HELD.discard(str(tmp))
        handle.close()


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


FSYNC_THREADS = 8  # fsync waits on the device, not the CPU: a store of many chunks flushes them side by side


def _fsync_tree(root: Path) -> None:
    """Flush every file of a store to disk, then every folder, deepest first (links, such as a linked source's
    chunks, are not ours to flush)."""
    from concurrent.futures import ThreadPoolExecutor

    files, folders = [], []
    for folder, _, names in os.walk(root, topdown=False):
        files += [Path(folder) / name for name in names if not (Path(folder) / name).is_symlink()]
        folders.append(Path(folder))
    with ThreadPoolExecutor(FSYNC_THREADS) as pool:
        list(pool.map(_fsync, files))  # list(): an error in any of them is raised here
    for folder in folders:
        _fsync_folder(folder)


@contextmanager
def atomic_store(final: str | os.PathLike):
    """Yield a temporary path to write a Zarr store into; flush it to disk and rename it to ``final`` on success.

    On any exception the temporary store is deleted and ``final`` is left
    untouched, so no half-written store remains.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    with claimed(final) as tmp:
        yield tmp
        _fsync_tree(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_folder(final.parent)


@contextmanager
def atomic_file(final: str | os.PathLike):
    """Yield a temporary path beside ``final`` to write one file into; rename it to ``final`` on success.

    On any exception the temporary file is removed and ``final`` is left untouched.
    """
    final = Path(final)
    with claimed(final) as tmp:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, final)
        _fsync_folder(final.parent)
