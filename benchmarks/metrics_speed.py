"""Time of the ISBI 2012 evaluation on 30 ISBI-sized sections (11 thresholds each).

    python benchmarks/metrics_speed.py [--data ../shared/data/isbi2012] [--workers 2]

The probability maps are the training labels blurred and perturbed with noise
(a realistic mix of thin and broken membranes), stored as a uint8 prediction
store like the predict rule writes; the timed call is the evaluate stage
itself (unet_pipeline.evaluate.evaluate), reading Zarr, scoring and writing the
CSV and JSON.
"""

import argparse
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

import numpy as np
import zarr
from scipy import ndimage
from unet_pipeline import volume_store
from unet_pipeline.evaluate import evaluate
from unet_pipeline.ingest import ingest


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "isbi2012")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        config = {"image": {"source": "i"}, "labels": {"source": "l"}}  # no split declared: all 30 sections
        ingest("isbi2012", config, args.data / "train-volume.tif", args.data / "train-labels.tif", folder / "v.zarr")
        labels = volume_store.open_store(folder / "v.zarr")[volume_store.LABELS_PATH][:].astype(np.float32)
        rng = np.random.default_rng(0)
        probability = np.clip(ndimage.gaussian_filter(labels, (0, 1.5, 1.5)) + rng.normal(0, 0.15, labels.shape), 0, 1)
        root = zarr.open_group(str(folder / "p.zarr"), mode="w")
        root.create_array("0", data=np.rint(probability * 255).astype(np.uint8), chunks=(1, 512, 512))
        root.attrs[volume_store.PROVENANCE_KEY] = {"model": "synthetic"}
        start = time.perf_counter()
        summary = evaluate(
            folder / "p.zarr", folder / "v.zarr", folder / "s.csv", folder / "s.json", workers=args.workers
        )
        elapsed = time.perf_counter() - start
    metrics = summary["metrics"]
    print(
        f"{len(summary['sections'])} sections of 512x512, 11 thresholds, "
        f"{args.workers} worker processes: {elapsed:.2f} s"
    )
    print(
        ", ".join(
            f"{name} {metrics[name]['value']:.4f} (t={metrics[name]['threshold']})"
            for name in ("v_rand", "v_info", "rand_error", "pixel_error")
        )
    )


if __name__ == "__main__":
    main()
