"""Atomic outputs: a killed run's temporaries go with the next write; files reach the disk before the rename."""

import os

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
