"""Cells made block by block: how many pixels differ from the unchunked cells on ISBI, and the peak memory and
time of the segment stage on a large volume.

    python benchmarks/segmentation_blocks.py [--results /path/of/a/laptop_accuracy/run] [--sides 128 256]
                                             [--size 16384] [--sections 2] [--halo 96]

1. For each ISBI prediction of the run (``isbi2012``, ``isbi2012_test``), the segment stage's cells with the
   schema's defaults (one block per 512 x 512 section) against the cells made in blocks of ``--sides`` pixels:
   the pixels whose cell differs (pixels outside the largest one-to-one overlaps of the two labelings), and
   the sections where any does. Setting: ``--edge-threshold``, by default the one the run's evaluation chose
   on 20-24 for the schema's method (its summary; rescore the run after a change of the method).
2. A ``--sections`` x ``--size``^2 prediction store tiled from the 30 held-out ISBI sections (each tile a
   section, turned and flipped in turn), segmented by the stage with the schema's defaults in a child process:
   its wall time and peak resident memory (``ru_maxrss``).
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from shipped_workflow import cpu_model
from unet_pipeline.data import volume_store
from unet_pipeline.segmentation.methods import SegmentationOptions
from unet_pipeline.stages.segment import chosen_setting, segment_volume


def differing_pixels(a: np.ndarray, b: np.ndarray) -> int:
    """Pixels outside the one-to-one pairs of cells that overlap most (a pair counts once, from both sides)."""
    pairs, counts = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1, return_counts=True)
    order = np.argsort(-counts)
    used_a, used_b, matched = set(), set(), 0
    for (x, y), count in zip(pairs.T[order].tolist(), counts[order].tolist()):
        if x not in used_a and y not in used_b:
            used_a.add(x)
            used_b.add(y)
            matched += count
    return a.size - matched


def cells(prediction: Path, options: SegmentationOptions, folder: Path, name: str) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    segment_volume(prediction, folder / f"{name}.zarr", folder / f"{name}.csv", options)
    seconds = time.perf_counter() - start
    return volume_store.open_store(folder / f"{name}.zarr")["cells"]["0"][:], seconds


def isbi_rows(results: Path, sides: list, options: SegmentationOptions) -> list[str]:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for dataset in ("isbi2012", "isbi2012_test"):
            prediction = results / dataset / "predictions" / "laptop.zarr"
            whole, seconds = cells(prediction, options, Path(folder), f"{dataset}-whole")
            rows.append(f"| {dataset} | one per section | {seconds:.1f} | | |")
            for side in sides:
                blocked = SegmentationOptions(**{**options.__dict__, "block": side * side})
                found, seconds = cells(prediction, blocked, Path(folder), f"{dataset}-{side}")
                differ = [differing_pixels(w, f) for w, f in zip(whole, found)]
                rows.append(
                    f"| {dataset} | {side} x {side} | {seconds:.1f} | {sum(differ)} of {whole.size} "
                    f"| {sum(d > 0 for d in differ)} of {len(whole)} |"
                )
    return rows


def tiled_prediction(results: Path, path: Path, size: int, sections: int) -> None:
    """A large prediction store tiled from the held-out sections' probabilities (uint8, as predicted)."""
    source = volume_store.open_store(results / "isbi2012_test" / "predictions" / "laptop.zarr")
    held_out = source[volume_store.IMAGE_PATH][:]
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    chunks = volume_store.section_chunks((sections, size, size))
    array = volume_store.create_level(root, volume_store.IMAGE_PATH, (sections, size, size), chunks, "uint8")
    tile, count = held_out.shape[1], 0
    for z in range(sections):
        for top in range(0, size, tile):
            row = []
            for _ in range(0, size, tile):
                section = np.rot90(held_out[count % len(held_out)], count // len(held_out) % 4)
                row.append(section[:, ::-1] if count // (4 * len(held_out)) % 2 else section)
                count += 1
            strip = np.concatenate(row, axis=1)[:, :size]
            array[z, top : top + tile] = strip[: min(tile, size - top)]
    root.attrs.update(source.attrs.asdict())


def large_volume_row(results: Path, size: int, sections: int, options: SegmentationOptions) -> str:
    with tempfile.TemporaryDirectory(dir=results) as folder:
        prediction = Path(folder) / "large.zarr"
        tiled_prediction(results, prediction, size, sections)
        code = (
            "import sys, json; from unet_pipeline.segmentation.methods import SegmentationOptions; "
            "from unet_pipeline.stages.segment import segment_volume; "
            "print(segment_volume(sys.argv[1], sys.argv[2], sys.argv[3], SegmentationOptions(**json.loads(sys.argv[4])))['cells'])"
        )
        settings = json.dumps({"method": options.method, "edge_threshold": options.edge_threshold})
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", code, str(prediction), f"{folder}/s.zarr", f"{folder}/s.csv", settings],
            check=True,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - start
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    return (
        f"| {sections} x {size} x {size} | {options.method} at {options.edge_threshold} | {done.stdout.strip()} cells "
        f"| {seconds:.0f} s | {peak_gib:.2f} GiB |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("/work/runs/laptop"))
    parser.add_argument("--sides", type=int, nargs="*", default=[128, 256])
    parser.add_argument("--halo", type=int, default=SegmentationOptions().halo)
    parser.add_argument("--size", type=int, default=16384)
    parser.add_argument("--sections", type=int, default=2)
    parser.add_argument("--edge-threshold", type=float, help="default: the run's evaluation's choice on 20-24")
    args = parser.parse_args()
    options = SegmentationOptions(halo=args.halo, edge_threshold=args.edge_threshold)
    options = chosen_setting(args.results / "isbi2012" / "evaluation" / "laptop" / "summary.json", options)
    print(f"CPU: {cpu_model()}\n")
    print(f"| prediction | blocks (halo {args.halo}) | segment s | pixels whose cell differs | sections that differ |")
    print("|---|---|---|---|---|")
    print("\n".join(isbi_rows(args.results, args.sides, options)), flush=True)
    if args.size:
        print("\n| volume | cells by | cells | segment wall time | peak memory (ru_maxrss) |\n|---|---|---|---|---|")
        print(large_volume_row(args.results, args.size, args.sections, options))


if __name__ == "__main__":
    main()
