"""Ingest of a large uint8 Zarr v3 volume: copied (``link: false``, as before) against used in place.

    python benchmarks/ingest_in_place.py [--data DIR] [--tiles 8] [--repeats 3]

The volume is the ISBI test volume tiled tiles x tiles in y and x (8: 30 x 4096 x 4096,
0.5 GB of uint8), written as a Zarr v3 array with one chunk per 1024 x 1024 of a
section, the layout a user's OME-Zarr 0.5 image typically has. Each mode runs
``unet_pipeline.stages.ingest.ingest`` (what the ingest rule calls) ``repeats`` times into
a fresh store; printed: the median time, the bytes the store itself occupies on
disk (links not followed) and whether the stored pixels equal the source, with
the CPU. A third mode links and verifies a configured ``pixel_sha256`` (reads the
whole volume once, writes nothing).
"""

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import zarr
from shipped_workflow import ISBI_DATA, cpu_model
from unet_pipeline.data import volume_store
from unet_pipeline.stages.ingest import ingest

REPO = Path(__file__).resolve().parents[1]


def tiled_zarr(data: Path, tiles: int, path: Path) -> str:
    """The tiled volume as a Zarr v3 array, section by section; returns the sha256 of its pixels."""
    stack = tifffile.imread(data / "test-volume.tif")
    shape = (stack.shape[0], stack.shape[1] * tiles, stack.shape[2] * tiles)
    array = zarr.create_array(str(path), shape=shape, chunks=(1, 1024, 1024), dtype="uint8")
    digest = hashlib.sha256()
    for z, section in enumerate(stack):
        tiled = np.tile(section, (tiles, tiles))
        array[z] = tiled
        digest.update(tiled.tobytes())
    return digest.hexdigest()


def disk_bytes(path: Path) -> int:
    """Bytes of the files under ``path``, not following links (a linked store is its metadata)."""
    total = 0
    for folder, _, files in os.walk(path):
        total += sum(os.lstat(Path(folder) / name).st_size for name in files)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ISBI_DATA)
    parser.add_argument("--tiles", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="ingest_in_place_"))
    try:
        source = folder / "big.zarr"
        pixel_sha = tiled_zarr(args.data, args.tiles, source)
        shape = zarr.open_array(str(source)).shape
        print(f"volume {shape} ({np.prod(shape) / 2**30:.2f} GiB uint8, Zarr v3), {cpu_model()}")
        modes = {
            "copy (link: false)": {"source": str(source), "link": False},
            "in place": {"source": str(source)},
            "in place + pixel_sha256": {"source": str(source), "pixel_sha256": pixel_sha},
        }
        times = {}
        for mode, image in modes.items():
            seconds = []
            for _ in range(args.repeats):
                out = folder / "volume.zarr"
                shutil.rmtree(out, ignore_errors=True)
                start = time.perf_counter()
                ingest(
                    "big", {"image": image, "voxel_size": [50, 4, 4], "sections": {"test": "all"}}, source, None, out
                )
                seconds.append(time.perf_counter() - start)
            stored = volume_store.open_store(out)[volume_store.IMAGE_PATH]
            same = all(np.array_equal(stored[z], zarr.open_array(str(source))[z]) for z in (0, shape[0] - 1))
            times[mode] = statistics.median(seconds)
            print(
                f"{mode:26s} {times[mode]:8.2f} s (median of {args.repeats})  store on disk "
                f"{disk_bytes(out) / 2**10:9.1f} KiB  pixels equal the source: {same}"
            )
        print(f"copy / in place: {times['copy (link: false)'] / times['in place']:.0f}x")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
