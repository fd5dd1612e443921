"""Where the predict stage's main thread spends its time: cProfile of predict_volume per tile and batch size.

    python benchmarks/profile_stage.py [--preset paper] [--shape 2 8192 8192] [--runs 508:4 700:4 700:16]
                                       [--out /tmp/unet_stage_profiles]

A random network of --preset predicts a synthetic volume (as predict_speed.py) once
per TILE:BATCH of --runs, each under cProfile; printed: each run's wall time and, for
the last run, the functions with the most time of their own. The profiles are
written to --out as stage_TILE_BATCH.prof for ``python -m pstats``. Only the main
thread is profiled: reading and writing threads show as its waits.
"""

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

import torch
from predict_speed import make_volume, preset_model
from unet_pipeline.stages.predict import predict_volume


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--shape", nargs=3, type=int, default=[2, 8192, 8192])
    parser.add_argument("--runs", nargs="+", default=["508:4", "700:4", "700:16"], help="TILE:BATCH pairs")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "unet_stage_profiles")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        model = str(preset_model(folder / "model.pt", args.preset))
        make_volume(folder / "volume.zarr", args.shape)
        for run in args.runs:
            size, batch = map(int, run.split(":"))
            profile = args.out / f"stage_{size}_{batch}.prof"
            profiler = cProfile.Profile()
            start = time.perf_counter()
            with profiler:
                predict_volume(
                    model,
                    str(folder / "volume.zarr"),
                    str(folder / f"out_{size}_{batch}.zarr"),
                    input_size=size,
                    batch_size=batch,
                    threads=torch.get_num_threads(),
                )
            print(f"tile {size}, batch {batch}: {time.perf_counter() - start:.1f} s", flush=True)
            profiler.dump_stats(profile)
    pstats.Stats(str(profile)).sort_stats("tottime").print_stats(18)


if __name__ == "__main__":
    main()
