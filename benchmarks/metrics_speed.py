"""Time of the ISBI 2012 evaluation on 30 ISBI-sized sections, 11 thresholds, every metric incl. warping error.

    python benchmarks/metrics_speed.py [--data DIR] [--workers 2]

The probability maps are the training labels blurred and perturbed with noise
(a realistic mix of thin and broken membranes), stored as a uint8 prediction
store like the predict rule writes; the timed call is the evaluate stage
itself (unet_pipeline.stages.evaluate.evaluate), reading Zarr, scoring and writing the
CSV and JSON. Then, in one process, the share of the warping error and how its
time grows with the section size (the ISBI section tiled 1x1, 2x2 and 3x3,
threshold 0.5 and the worst threshold of the sweep).
"""

import argparse
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

import numpy as np
import zarr
from scipy import ndimage
from shipped_workflow import ISBI_DATA
from unet_pipeline.data import volume_store
from unet_pipeline.metrics import FIJI_THRESHOLDS, section_scores
from unet_pipeline.metrics.warping import warping_mismatches
from unet_pipeline.stages.evaluate import evaluate
from unet_pipeline.stages.ingest import ingest
from unet_pipeline.transforms.cells import cells_of


def synthetic_prediction(labels: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    blurred = ndimage.gaussian_filter(labels.astype(np.float32), (0, 1.5, 1.5))
    return np.rint(np.clip(blurred + rng.normal(0, 0.15, labels.shape), 0, 1) * 255).astype(np.uint8)


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def warping_scaling(labels: np.ndarray, stored: np.ndarray) -> None:
    """Warping time of one section tiled n x n (mirrored so that cells continue across the seams)."""
    probability = volume_store.decode_probability(stored)
    for n in (1, 2, 3):
        big_labels = np.pad(labels, [(0, (n - 1) * s) for s in labels.shape], mode="reflect")
        big_probability = np.pad(probability, [(0, (n - 1) * s) for s in probability.shape], mode="reflect")
        times = []
        for threshold in FIJI_THRESHOLDS:
            _, elapsed = timed(warping_mismatches, big_labels, big_probability, threshold)
            times.append(elapsed)
        print(
            f"  warping, {big_labels.shape[0]}x{big_labels.shape[1]}: {sum(times):.2f} s for 11 thresholds "
            f"({sum(times) / big_labels.size * 1e6:.2f} s per Mpixel; slowest threshold {max(times):.3f} s)"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ISBI_DATA)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        config = {"image": {"source": "i"}, "labels": {"source": "l"}}  # no split declared: all 30 sections
        ingest("isbi2012", config, args.data / "train-volume.tif", args.data / "train-labels.tif", folder / "v.zarr")
        labels = volume_store.open_store(folder / "v.zarr")[volume_store.LABELS_PATH][:]
        stored = synthetic_prediction(labels)
        root = zarr.open_group(str(folder / "p.zarr"), mode="w")
        root.create_array("0", data=stored, chunks=(1, 512, 512))
        checksum = volume_store.provenance(volume_store.open_store(folder / "v.zarr"))["image"]["pixel_sha256"]
        root.attrs[volume_store.PROVENANCE_KEY] = {"model": "synthetic", "input_pixel_sha256": checksum}
        section_scores(volume_store.decode_probability(stored[0, :64, :64]), cells_of(labels[0, :64, :64]))  # JIT
        paths = (folder / "p.zarr", folder / "v.zarr", folder / "s.csv", folder / "s.json")
        summary, elapsed = timed(lambda: evaluate(*paths, workers=args.workers))
    metrics = summary["metrics"]
    print(
        f"{len(summary['sections'])} sections of 512x512, 11 thresholds, every metric, "
        f"{args.workers} worker processes: {elapsed:.2f} s"
    )
    names = ("v_rand", "v_info", "rand_error", "pixel_error", "warping_error")
    print(", ".join(f"{name} {metrics[name]['value']:.6f} (t={metrics[name]['threshold']})" for name in names))
    probability = volume_store.decode_probability(stored[0])
    _, everything = timed(section_scores, probability, cells_of(labels[0]))
    _, warping = timed(lambda: [warping_mismatches(labels[0], probability, t) for t in FIJI_THRESHOLDS])
    print(f"one section, one process: {everything:.2f} s for every metric, of which warping {warping:.2f} s")
    warping_scaling(labels[0], stored[0])


if __name__ == "__main__":
    main()
