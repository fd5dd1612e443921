"""The measured tile choice on this device: every candidate's throughput, and the stage with it.

    python benchmarks/tile_choice.py [--shape 2 2048 2048] [--preset laptop] [--amp bf16]
                                     [--model results/isbi2012/models/laptop/model.pt]

What ``prediction.input_size: null`` does (``unet_pipeline.inference.tile_choice``): the network's
(default: a random one of the laptop preset) candidates for 1024-px output chunks are measured on the device (the same
batch size, threads and precision as the predict rule's defaults), and the chosen one
is printed. Then the predict stage (``predict_volume``) predicts a synthetic volume of
--shape with the training tile and with the chosen tile, each in its own process so
that its peak RSS is its own (the measuring runs in a process of its own too: Linux
keeps a parent's peak RSS in the children it starts); printed: time, Mvoxel/s, peak memory, and the largest
difference between the two outputs (stored as float16) with the CPU or GPU name.
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
import torch
from predict_speed import make_volume, preset_model
from shipped_workflow import cpu_model
from unet_pipeline.data import volume_store
from unet_pipeline.inference import tile_choice
from unet_pipeline.stages.predict import PredictionOptions, load_predictor, predict_volume


def measure_choice(model: str, amp: str) -> dict:
    """The tile choice as the predict stage makes it, with the time it took and the device's name."""
    options = PredictionOptions(threads=torch.get_num_threads(), amp=amp)
    predictor, metadata = load_predictor(model, options)
    started = time.perf_counter()
    choice = tile_choice.choose(predictor, metadata["input_size"], (1024, 1024), 8000)
    device = torch.cuda.get_device_name() if predictor.device.type == "cuda" else cpu_model()
    return choice | {"seconds": time.perf_counter() - started, "device": device, "training": metadata["input_size"]}


def child(model: str, volume: str, out: str, input_size: int, amp: str) -> None:
    if input_size == 0:
        print(json.dumps(measure_choice(model, amp)))
        return
    start = time.perf_counter()
    threads = torch.get_num_threads()
    predict_volume(model, volume, out, dtype="float16", input_size=input_size, threads=threads, amp=amp)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", nargs=3, type=int, default=[2, 2048, 2048])
    parser.add_argument("--model", type=Path, help="a trained model.pt (default: a random network of --preset)")
    parser.add_argument("--preset", default="laptop", help="the shipped preset whose network is used without --model")
    parser.add_argument("--amp", default="bf16", choices=["none", "bf16"], help="autocast on CUDA (the CPU: float32)")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child[:3], int(args.child[3]), args.child[4])
        return
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        model = str(args.model or preset_model(folder / "model.pt", args.preset))

        def run(*rest):
            command = [sys.executable, __file__, "--child", model, *rest, args.amp]
            return json.loads(
                subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1]
            )

        choice = run("-", "-", "0")
        print(f"{choice['device']}, {torch.get_num_threads()} threads, batch 4, chunks 1024 x 1024, amp {args.amp}")
        print(f"measuring took {choice['seconds']:.1f} s (what a prediction's first job adds)")
        for row in choice["measured"]:
            print(
                f"  tile {row['input_size']:4d}: {row['pixels_per_second'] / 1e6:6.3f} Mpixel/s of chunk, "
                f"{row['seconds_per_tile']:.3f} s per tile, process peak {row['peak_bytes'] / 2**20:6.0f} MiB"
            )
        print(f"chosen: {choice['input_size']} (training tile {choice['training']})")
        make_volume(folder / "volume.zarr", args.shape)
        stored = {}
        for size in dict.fromkeys([choice["training"], choice["input_size"]]):
            out = folder / f"out{size}.zarr"
            result = run(str(folder / "volume.zarr"), str(out), str(size))
            rate = np.prod(args.shape) / result["seconds"] / 1e6
            print(
                f"stage, tile {size}: {result['seconds']:.1f} s, {rate:.3f} Mvoxel/s, peak {result['peak_mib']:.0f} MiB"
            )
            stored[size] = volume_store.open_store(out)[volume_store.IMAGE_PATH][:].astype(np.float32)
        values = list(stored.values())
        print(f"largest difference between the outputs: {np.abs(values[0] - values[-1]).max():.2e} (float16 storage)")


if __name__ == "__main__":
    main()
