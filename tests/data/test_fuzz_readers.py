"""A fuzz test of every reader, through ingest: seeded mutations of small valid TIFF, PNG, HDF5 and Zarr sources.

Each mutation either ingests or fails with the pipeline's own error naming the file; no other exception, no
hang (an alarm after HANG_S), and the process's peak memory stays within the job's guard. The counts by outcome
are printed (``pytest -s``), as SQLite's and hypothesis' habits ask: what was tried and what survived.

A plain seeded generator rather than hypothesis: the inputs are byte mutations of files, where hypothesis'
shrinking has little to work on, and a fixed seed makes every count reproducible. Run more with
``python tests/data/test_fuzz_readers.py N``.
"""

from __future__ import annotations

import collections
import json
import shutil
import signal
import struct
import sys
import tempfile
import zlib
from pathlib import Path

import h5py
import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import zarr
from unet_pipeline.core.errors import PipelineError
from unet_pipeline.data.readers import MemoryLimit
from unet_pipeline.stages.ingest import ingest

MUTATIONS = 1200  # at least 1000, as the issue asks, spread over the four formats
HANG_S = 5
GUARD = MemoryLimit(64 * 2**20, "ingest")
PIXELS = np.arange(3 * 24 * 32, dtype=np.uint16).reshape(3, 24, 32) % 251


def seed_tiff(folder: Path) -> Path:
    path = folder / "stack.tif"
    tifffile.imwrite(path, PIXELS.astype(np.uint8), photometric="minisblack", compression="zlib")
    return path


def seed_png(folder: Path) -> Path:
    path = folder / "sections"
    path.mkdir()
    for z, section in enumerate(PIXELS.astype(np.uint8)):
        iio.imwrite(path / f"{z}.png", section)
    return path


def seed_hdf5(folder: Path) -> Path:
    path = folder / "stack.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("raw", data=PIXELS, chunks=(1, 24, 32), compression="gzip")
    return path


def seed_zarr(folder: Path) -> Path:
    path = folder / "stack.zarr"
    zarr.create_array(str(path), shape=PIXELS.shape, chunks=(1, 24, 32), dtype="uint8")[:] = PIXELS
    return path


SEEDS = {"tiff": seed_tiff, "png": seed_png, "hdf5": seed_hdf5, "zarr": seed_zarr}


def _target_file(source: Path, rng) -> Path:
    """The file of a source to mutate: the file itself, or one file of a folder or store."""
    if source.is_file():
        return source
    files = sorted(path for path in source.rglob("*") if path.is_file())
    return files[rng.integers(len(files))]


def flip_bits(data: bytearray, rng) -> bytearray:
    for _ in range(rng.integers(1, 9)):
        position = rng.integers(len(data))
        data[position] ^= 1 << rng.integers(8)
    return data


def truncate(data: bytearray, rng) -> bytearray:
    return data[: rng.integers(len(data))]


def huge_size(data: bytearray, rng) -> bytearray:
    """Overwrite a random aligned 4-byte field with a huge number: a declared size, offset or count."""
    position = rng.integers(max(len(data) // 4, 1)) * 4
    data[position : position + 4] = struct.pack("<I", int(rng.choice([40_000, 100_000, 2**31 - 1, 2**32 - 1])))
    return data[: len(data)]


def png_declared(data: bytearray, rng) -> bytearray:
    """A PNG whose IHDR declares a huge image, with a valid CRC (so only the size is wrong)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return huge_size(data, rng)
    side = struct.pack(">II", int(rng.choice([30_000, 100_000])), int(rng.choice([30_000, 2**31 - 1])))
    body = b"IHDR" + side + bytes(data[24:29])
    return data[:12] + body + struct.pack(">I", zlib.crc32(body)) + data[33:]


def zarr_metadata(data: bytearray, rng) -> bytearray:
    """A zarr.json with a huge shape or chunk, or a wrong dtype."""
    try:
        metadata = json.loads(bytes(data))
    except ValueError:
        return flip_bits(data, rng)
    if "shape" not in metadata:
        return flip_bits(data, rng)
    choice = rng.integers(3)
    if choice == 0:
        metadata["shape"] = [3, int(rng.choice([40_000, 10**9])), 32]
    elif choice == 1:
        metadata["chunk_grid"]["configuration"]["chunk_shape"] = [3, 20_000, 20_000]
    else:
        metadata["data_type"] = str(rng.choice(["float64", "complex128", "bool", "int64", "uint64", "string"]))
    return bytearray(json.dumps(metadata).encode())


MUTATORS = {"flip bits": flip_bits, "truncate": truncate, "huge size": huge_size, "declared size": png_declared}


def mutate(source: Path, rng) -> str:
    """Apply one random mutation to one file of ``source``; returns its name."""
    target = _target_file(source, rng)
    data = bytearray(target.read_bytes())
    if target.name == "zarr.json" and rng.random() < 0.7:
        name, mutator = "metadata", zarr_metadata
    else:
        name = list(MUTATORS)[rng.integers(len(MUTATORS))]
        mutator = MUTATORS[name]
    target.write_bytes(bytes(mutator(data, rng)) if data else b"\x00")
    return name


def _peak_rss_reset() -> bool:
    """Reset the process's peak resident size (Linux: /proc/self/clear_refs); False where it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _alarm(signum, frame):
    raise TimeoutError(f"no answer within {HANG_S} s")


def try_one(source: Path, out: Path) -> tuple[str, str]:
    """Ingest a (mutated) source: ('ingested' | 'refused' | 'FAILED: ...', detail)."""
    dataset = {"image": {"source": str(source), "key": "raw" if source.suffix == ".h5" else None}}
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(HANG_S)
    try:
        ingest("fuzz", dataset, source, None, out, memory=GUARD)
        return "ingested", ""
    except PipelineError as error:
        if str(source) not in str(error):
            return "FAILED: error without the file's name", str(error)
        return "refused", ""
    except Exception as error:  # noqa: BLE001 (anything else is a bug of the reader: counted, not raised)
        return f"FAILED: {type(error).__name__}", str(error)[:300]
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        shutil.rmtree(out, ignore_errors=True)


def fuzz(mutations: int, seed: int = 0) -> tuple[collections.Counter, list, int]:
    """Run ``mutations`` seeded mutations round the four formats; returns the counts by (format, mutation,
    outcome), the failures, and the largest peak-memory growth of one ingest in bytes."""
    rng = np.random.default_rng(seed)
    counts, failures, worst = collections.Counter(), [], 0
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        pristine = {}
        for kind, make in SEEDS.items():
            (folder / f"seed-{kind}").mkdir()
            pristine[kind] = make(folder / f"seed-{kind}")
        for index in range(mutations):
            kind = list(SEEDS)[index % len(SEEDS)]
            work = folder / "work"
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(pristine[kind].parent, work, symlinks=True)
            source = work / pristine[kind].name
            mutation = mutate(source, rng)
            measured = _peak_rss_reset()
            before = _rss_kb("VmRSS")
            outcome, detail = try_one(source, folder / "out.zarr")
            if measured:
                worst = max(worst, (_rss_kb("VmHWM") - before) * 1024)
            counts[(kind, mutation, outcome)] += 1
            if outcome.startswith("FAILED"):
                failures.append((index, kind, mutation, outcome, detail))
    return counts, failures, worst


def report(counts: collections.Counter, worst: int) -> str:
    lines = [f"{'format':6} {'mutation':14} {'outcome':40} count"]
    lines += [f"{k:6} {m:14} {o:40} {n}" for (k, m, o), n in sorted(counts.items())]
    by_outcome = collections.Counter()
    for (_, _, outcome), n in counts.items():
        by_outcome[outcome] += n
    lines.append(f"total {sum(counts.values())}: " + ", ".join(f"{o} {n}" for o, n in sorted(by_outcome.items())))
    lines.append(f"largest peak-memory growth of one ingest: {worst / 2**20:.1f} MiB (guard {GUARD.bytes / 2**20:.0f})")
    return "\n".join(lines)


@pytest.mark.workflow
def test_every_mutation_ingests_or_fails_with_the_pipelines_error_naming_the_file():
    counts, failures, worst = fuzz(MUTATIONS)
    print("\n" + report(counts, worst))
    assert sum(counts.values()) == MUTATIONS >= 1000
    assert not failures, "\n".join(map(str, failures[:10]))
    assert worst < GUARD.bytes, f"an ingest grew the process by {worst / 2**20:.0f} MiB, past the guard"
    refused = sum(n for (_, _, outcome), n in counts.items() if outcome == "refused")
    assert 0 < refused < MUTATIONS, "the mutations reach both outcomes"


if __name__ == "__main__":
    counts, failures, worst = fuzz(int(sys.argv[1]) if len(sys.argv) > 1 else MUTATIONS)
    print(report(counts, worst))
    print("\n".join(map(str, failures[:20])) or "no failures")
