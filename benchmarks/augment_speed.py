"""Augmentation speed and memory: this pipeline vs elasticdeform, on 572 -> 388 ISBI samples.

    pip install --no-binary elasticdeform elasticdeform==0.5.1   # its wheel is built against NumPy 1
    python benchmarks/augment_speed.py [--data DIR] [--samples 200]

Each method runs in its own subprocess (so peak RSS is its own) on one core, on
the ISBI training sections held in memory, and makes one sample as the training
set needs it: a 572x572 input tile (cubic spline) with 388x388 label (linear,
thresholded) and weight (linear) tiles, context mirrored at section borders:

- ours-elastic: unet_pipeline.stages.augment with the elastic deformation alone
- elasticdeform: elasticdeform.deform_grid on a mirrored 572 cut, same 3x3 grid and sigma 10
  (image with order 3; labels and weights with order 1, cropped to 388)
- ours-all: unet_pipeline.stages.augment with every augmentation (shift, flip, rotation, elastic, gray values)
- stage: the augment stage itself (write_augmented_set, Zarr in and out, dask on 2 worker processes)
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

import numpy as np
from shipped_workflow import ISBI_DATA

INPUT, OUTPUT, MARGIN, SIGMA, POINTS = 572, 388, 92, 10.0, 3
METHODS = ("ours-elastic", "elasticdeform", "ours-all", "stage")


def settings(all_on: bool) -> dict:
    on = {"enabled": True}
    return {
        "seed": 0,
        "samples_per_task": 16,
        "shift": on,
        "flip": on if all_on else {"enabled": False},
        "rotation": {"enabled": all_on, "max_degrees": 180},
        "elastic": {"enabled": True, "grid_points": POINTS, "sigma": SIGMA},
        "intensity": {"enabled": all_on, "brightness": 0.1, "contrast": 0.2, "gamma": 0.2},
    }


def load(data: Path):
    import tifffile
    from unet_pipeline.transforms.loss_weights import class_weights, weight_map

    image = tifffile.imread(data / "train-volume.tif")[:25]
    labels = (tifffile.imread(data / "train-labels.tif")[:25] == 255).astype(np.uint8)
    balance = class_weights(labels.mean())
    weights = np.stack([weight_map(section, balance) for section in labels])
    return image, labels, weights


def run_ours(data: Path, samples: int, all_on: bool) -> None:
    from unet_pipeline.transforms.augmentation import draw_sample, make_sample

    image, labels, weights = load(data)
    options = settings(all_on)
    for index in range(samples):
        params = draw_sample(np.random.default_rng([0, index]), options, list(range(25)), image.shape[1:], OUTPUT)
        make_sample(image, labels, weights, params, INPUT, OUTPUT)


def run_elasticdeform(data: Path, samples: int) -> None:
    import elasticdeform
    from unet_pipeline.data.mirror import read_mirrored

    image, labels, weights = load(data)
    inner = (slice(MARGIN, MARGIN + OUTPUT),) * 2
    for index in range(samples):
        rng = np.random.default_rng([0, index])
        section = int(rng.integers(25))
        top, left = rng.integers(0, 512 - OUTPUT + 1, 2)
        rows, cols = np.arange(top - MARGIN, top - MARGIN + INPUT), np.arange(left - MARGIN, left - MARGIN + INPUT)
        displacement = rng.normal(0, SIGMA, (2, POINTS, POINTS))
        tile = read_mirrored(image, section, rows, cols).astype(np.float64)
        elasticdeform.deform_grid(tile, displacement, order=3, mode="mirror")
        pair = [read_mirrored(array, section, rows, cols).astype(np.float32) for array in (labels, weights)]
        label_tile, _ = elasticdeform.deform_grid(pair, displacement, order=[1, 1], mode="mirror", crop=inner)
        (label_tile > 0.5).astype(np.uint8)


def run_stage(data: Path, samples: int) -> None:
    from unet_pipeline.models.tile_geometry import TileGeometry
    from unet_pipeline.stages.augment import write_augmented_set
    from unet_pipeline.stages.ingest import ingest
    from unet_pipeline.stages.weight_maps import write_weight_maps

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        config = {"image": {"source": "i"}, "labels": {"source": "l"}, "sections": {"train": "0-24"}}
        ingest("isbi2012", config, data / "train-volume.tif", data / "train-labels.tif", folder / "v.zarr")
        write_weight_maps(folder / "v.zarr", folder / "w.zarr", workers=2)
        options = {**settings(True), "samples": samples}
        start = time.perf_counter()
        write_augmented_set(
            folder / "v.zarr",
            folder / "w.zarr",
            folder / "a.zarr",
            options,
            TileGeometry(levels=5, padded=False),
            INPUT,
            workers=2,
            progress=False,
        )
        return time.perf_counter() - start


def child(method: str, data: Path, samples: int) -> None:
    """Run one method and print its timing and peak memory as JSON."""
    start = time.perf_counter()
    if method == "stage":
        elapsed = run_stage(data, samples)
    else:
        {
            "ours-elastic": lambda: run_ours(data, samples, False),
            "ours-all": lambda: run_ours(data, samples, True),
            "elasticdeform": lambda: run_elasticdeform(data, samples),
        }[method]()
        elapsed = time.perf_counter() - start
    peak_kib = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    )
    print(json.dumps({"method": method, "seconds": elapsed, "samples": samples, "peak_rss_mib": peak_kib / 1024}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ISBI_DATA)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.data, args.samples)
        return
    results = {}
    for method in METHODS:
        command = [
            sys.executable,
            __file__,
            "--child",
            method,
            "--data",
            str(args.data),
            "--samples",
            str(args.samples),
        ]
        results[method] = json.loads(
            subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1]
        )
    print(f"{args.samples} samples of {INPUT} -> {OUTPUT} px (grid {POINTS}x{POINTS}, sigma {SIGMA} px)")
    print(f"{'method':15s} {'samples/s':>10s} {'ms/sample':>10s} {'peak RSS MiB':>13s}")
    for method, result in results.items():
        rate = result["samples"] / result["seconds"]
        print(f"{method:15s} {rate:10.1f} {1000 / rate:10.1f} {result['peak_rss_mib']:13.0f}")
    ratio = results["elasticdeform"]["seconds"] / results["ours-elastic"]["seconds"]
    print(f"speed ratio ours-elastic / elasticdeform (same work, one core): {ratio:.2f}x")


if __name__ == "__main__":
    main()
