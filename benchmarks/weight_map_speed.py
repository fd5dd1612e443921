"""Weight maps of the 30 ISBI 2012 training sections: windowed implementation vs brute force.

    python benchmarks/weight_map_speed.py [--data DIR] [--repeats 3]

Times the library's weight_map over all sections serially and with dask on 2
threads (as the weight_maps rule runs it), and the brute-force reference (one
full-image distance transform per cell, weight_maps.brute_force_border_weight),
each the best of --repeats runs, and reports the speed-up and the largest
difference between the two.
"""

import argparse
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

import dask
import dask.array as da
import numpy as np
import tifffile
from shipped_workflow import ISBI_DATA
from unet_pipeline.transforms.cells import cells_of
from unet_pipeline.transforms.loss_weights import border_weight, brute_force_border_weight, class_weights, weight_map


def best_of(repeats, function):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ISBI_DATA)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--w0", type=float, default=10.0)
    parser.add_argument("--sigma", type=float, default=5.0)
    args = parser.parse_args()

    labels = (tifffile.imread(args.data / "train-labels.tif") == 255).astype(np.uint8)
    balance = class_weights(labels[:25].mean())
    n = len(labels)
    cells = [cells_of(section) for section in labels]
    print(f"{n} sections of {labels.shape[1:]}, {min(c.max() for c in cells)}-{max(c.max() for c in cells)} cells each")

    serial, fast = best_of(
        args.repeats, lambda: np.stack([weight_map(s, balance, args.w0, args.sigma) for s in labels])
    )
    lazy = da.from_array(labels, chunks=(1, *labels.shape[1:])).map_blocks(
        lambda block: weight_map(block[0], balance, args.w0, args.sigma)[None], dtype=np.float32
    )
    with dask.config.set(scheduler="threads", num_workers=2):
        threaded, fast_dask = best_of(args.repeats, lazy.compute)
    brute, brute_border = best_of(
        args.repeats, lambda: np.stack([brute_force_border_weight(c, args.w0, args.sigma) for c in cells])
    )
    fast_border = np.stack([border_weight(c, args.w0, args.sigma) for c in cells])

    print(f"best of {args.repeats} runs each")
    print(f"windowed, serial:          {serial:7.3f} s  ({1000 * serial / n:.1f} ms/section)")
    print(f"windowed, dask 2 threads:  {threaded:7.3f} s  ({1000 * threaded / n:.1f} ms/section)")
    print(f"brute force, serial:       {brute:7.3f} s  ({1000 * brute / n:.1f} ms/section)")
    print(f"speed-up over brute force: {brute / serial:.1f}x serial, {brute / threaded:.1f}x with dask")
    print(f"max |windowed - brute| of the border term: {np.abs(fast_border - brute_border).max():.2e}")
    print(f"dask result equals serial result: {np.array_equal(fast, fast_dask)}")


if __name__ == "__main__":
    main()
