"""What flushing a store to disk costs: ``atomic_store`` with its files flushed side by side, one after another,
and not at all, in turns.

    python benchmarks/fsync_store.py [--shape 30 512 512] [--chunk 64] [--rounds 3] [--folder DIR]

Each round writes a uint8 Zarr array of --shape in --chunk x --chunk chunks (one section per chunk along z) into
an ``atomic_store`` under --folder (default: the current folder, so the disk is the one results go to) and times
it, for each of the three ways. Prints seconds per way (median over rounds) and the number of files.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from unet_pipeline.core import atomic

THREADED = atomic._fsync_tree


def sequential(root: Path) -> None:
    for path in sorted(root.rglob("*"), key=lambda p: -len(p.parts)):
        if path.is_file() and not path.is_symlink():
            atomic._fsync(path)
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        atomic._fsync_folder(folder)
    atomic._fsync_folder(root)


WAYS = {"threads (the stage)": THREADED, "one after another": sequential, "no fsync": lambda root: None}


def write_once(folder: Path, shape: tuple, chunk: int, flush) -> float:
    atomic._fsync_tree = flush
    try:
        started = time.perf_counter()
        with atomic.atomic_store(folder / "store.zarr") as tmp:
            array = zarr.create_array(str(tmp), shape=shape, chunks=(1, chunk, chunk), dtype="u1")
            array[:] = np.arange(np.prod(shape), dtype=np.uint64).reshape(shape).astype(np.uint8)
        return time.perf_counter() - started
    finally:
        atomic._fsync_tree = THREADED
        shutil.rmtree(folder / "store.zarr", ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=[30, 512, 512])
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--folder", type=Path, default=Path("."))
    args = parser.parse_args()
    shape = tuple(args.shape)
    files = shape[0] * -(-shape[1] // args.chunk) * -(-shape[2] // args.chunk)
    times = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        for _ in range(args.rounds):
            for way, flush in WAYS.items():
                times[way].append(write_once(Path(folder), shape, args.chunk, flush))
    print(f"store {shape} in {args.chunk}-px chunks: {files} chunk files; fsync threads: {atomic.FSYNC_THREADS}")
    for way, seconds in times.items():
        print(f"{way:22} {statistics.median(seconds):6.2f} s  ({', '.join(f'{s:.2f}' for s in seconds)})")


if __name__ == "__main__":
    main()
