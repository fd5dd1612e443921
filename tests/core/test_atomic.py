"""Atomic outputs: a killed run's temporaries go with the next write; files reach the disk before the rename."""

import os
import signal
import subprocess
import sys
from pathlib import Path

from unet_pipeline.core import atomic
from unet_pipeline.core.atomic import atomic_file, atomic_store


def test_a_killed_runs_temporary_store_is_removed_by_the_next_write(tmp_path):
    stale = tmp_path / ".volume.zarr.tmp-deadbeef"  # what a SIGKILL during a copy leaves
    (stale / "0").mkdir(parents=True)
    (stale / "0" / "c").write_bytes(b"x" * 4096)
    other = tmp_path / ".weights.zarr.tmp-cafe0000"  # another output's: not this write's to remove
    other.mkdir()
    with atomic_store(tmp_path / "volume.zarr") as tmp:
        tmp.mkdir()
        (tmp / "zarr.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".weights.zarr.tmp-cafe0000", "volume.zarr"]


def test_a_file_is_flushed_to_disk_before_it_is_renamed(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: events.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: events.append("rename") or real_replace(a, b))
    (tmp_path / ".last.pt.tmp-0badf00d").write_bytes(b"truncated")  # a crash's leftover
    with atomic_file(tmp_path / "last.pt") as tmp:
        tmp.write_bytes(b"checkpoint")
    assert events == ["fsync", "rename", "fsync"], "the file, then the folder entry naming it"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_a_store_is_flushed_to_disk_file_by_file_before_it_is_renamed(tmp_path, monkeypatch):
    synced, events = [], []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(
        atomic.os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real_fsync(fd)
    )
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: events.append(len(synced)) or real_replace(a, b))
    with atomic_store(tmp_path / "volume.zarr") as tmp:
        (tmp / "0" / "c").mkdir(parents=True)
        (tmp / "zarr.json").write_text("{}")
        (tmp / "0" / "c" / "0").write_bytes(b"chunk")
    names = [Path(path).name for path in synced[: events[0]]]
    assert sorted(names) == sorted(["zarr.json", "0", "c", "0", tmp.name]), names  # 2 files, 3 folders
    assert synced[-1] == str(tmp_path), "then the folder entry naming the store"


HOLD = """
import sys, time
from unet_pipeline.core.atomic import atomic_store
with atomic_store(sys.argv[1]) as tmp:
    tmp.mkdir()
    print(tmp, flush=True)
    time.sleep(60)
"""


def test_a_running_writers_temporary_is_never_removed_by_another(tmp_path):
    """Two writers of one output (an old cluster job still running): neither deletes the other's work. Once the
    first is killed, its temporary is stale and the next write removes it with its lock."""
    final = tmp_path / "volume.zarr"
    other = subprocess.Popen([sys.executable, "-c", HOLD, str(final)], stdout=subprocess.PIPE, text=True)
    try:
        theirs = Path(other.stdout.readline().strip())
        with atomic_store(final) as tmp:
            tmp.mkdir()
        assert theirs.is_dir(), "a live writer's temporary was removed"
    finally:
        other.send_signal(signal.SIGKILL)
        other.wait()
    with atomic_store(final) as tmp:
        tmp.mkdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["volume.zarr"]
