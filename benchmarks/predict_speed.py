"""Prediction throughput and peak memory: the predict stage vs MONAI's sliding_window_inference.

    pip install monai==1.6.1      # for the comparison only
    python benchmarks/predict_speed.py [--shape 8 16384 16384] [--input-size 508] [--preset laptop]
                                       [--model results/isbi2012/models/laptop/model.pt] [--device auto] [--amp bf16]
                                       [--compile]

A synthetic uint8 volume of --shape (random gray values, written chunk by chunk
to Zarr) is predicted three ways, each in its own subprocess so that peak RSS is
its own:

- stage: unet_pipeline.stages.predict.predict_volume (Zarr in, Zarr out, chunk by chunk);
- monai: per section, monai.inferers.sliding_window_inference over the section
  as one tensor, with the same network wrapped to mirror-pad its input by the
  context margin (so its output matches the ROI), ROI = the output tile, overlap
  = the stage's (out - step) / out, mirror padding at the borders; each
  section's probability is written to Zarr;
- compute: the network alone on as many random tiles as the stage predicts, no
  I/O, no tiling (the stage's tiling overhead is stage time / compute time);
- compiled (with --compile): the compute side with ``torch.compile(model)``; the
  first batch, which compiles, is not timed (its time is printed).

The stage and MONAI are timed as a user meets them, first batch (allocations, cuDNN's
kernel choice) included; the compute sides predict one batch before their clock
starts. Time per section is the time over the number of sections (--shape 30 512 512
is ISBI's test volume); a large volume gives the steady throughput.

All three run on the same device (--device, default: CUDA when present) with
the same precision (--amp: bf16 autocast on CUDA, as the stage does; float32 on
the CPU), and the output says which.

Without --model a randomly initialised network of --preset (default laptop) is
used (throughput does not depend on the weights). The default shape is 2 GiB; a
smaller one (for example --shape 1 8192 8192) gives the same per-voxel rates on
the CPU in far less time.
"""

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

import numpy as np
import torch
from shipped_workflow import cpu_model, shipped_config


def preset_model(path: Path, preset: str = "laptop") -> Path:
    """A randomly initialised network of a shipped preset saved as a model file (speed does not depend on weights)."""
    from unet_pipeline.models.unet import UNetConfig, build_model, save_model

    settings = shipped_config()["presets"][preset]
    torch.manual_seed(0)
    metadata = {
        "model": {**settings["model"], "in_channels": 1, "classes": 2},
        "input_size": settings["input_size"],
        "normalisation": {"mean": 0.5, "std": 0.2},
    }
    save_model(build_model(UNetConfig(**settings["model"])), path, metadata)
    return path


def make_volume(path: Path, shape) -> None:
    import zarr

    array = zarr.create_array(
        str(path), shape=shape, chunks=(1, min(shape[1], 1024), min(shape[2], 1024)), dtype="uint8"
    )
    rng = np.random.default_rng(0)
    for z in range(shape[0]):
        array[z] = rng.integers(0, 256, shape[1:], dtype=np.uint8)


def precision(device: str, amp: str):
    """The device and autocast dtype every side uses, chosen as the stage chooses them."""
    from unet_pipeline.models.devices import amp_dtype, pick_device

    torch_device = pick_device(device)
    return torch_device, amp_dtype(amp, torch_device)


def run_stage(model: str, volume: str, out: str, input_size: int, threads: int, device: str, amp: str) -> dict:
    from unet_pipeline.stages.predict import predict_volume

    info = predict_volume(
        model, volume, out, batch_size=4, device=device, amp=amp, threads=threads, input_size=input_size
    )
    return {"seconds": info["seconds"]}


def run_monai(model_path: str, volume: str, out: str, input_size: int, threads: int, device: str, amp: str) -> dict:
    import zarr
    from monai.inferers import sliding_window_inference
    from unet_pipeline.inference.overlap_tile import normalise
    from unet_pipeline.models.devices import autocast
    from unet_pipeline.models.unet import load_model

    torch.set_num_threads(threads)
    torch_device, dtype = precision(device, amp)
    model, metadata = load_model(model_path, torch_device)
    geometry = model.config.geometry
    output, margin, step = geometry.output_size(input_size), geometry.margin(input_size), geometry.tile_step(input_size)

    class MirrorPadded(torch.nn.Module):
        """The same network, its input mirror-padded by the context margin: output size = input size."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return torch.softmax(self.net(torch.nn.functional.pad(x, (margin,) * 4, mode="reflect")), dim=1)[:, 1:]

    wrapped = MirrorPadded(model).eval()
    image = zarr.open(volume, mode="r")
    target = zarr.create_array(out, shape=image.shape, chunks=image.chunks, dtype="uint8")
    start = time.perf_counter()
    with torch.no_grad(), autocast(torch_device, dtype):
        for z in range(image.shape[0]):
            section = torch.from_numpy(normalise(image[z], metadata["normalisation"]))[None, None].to(torch_device)
            probability = sliding_window_inference(
                section,
                (output, output),
                4,
                wrapped,
                overlap=(output - step) / output,
                mode="constant",
                padding_mode="reflect",
            )
            target[z] = np.rint(probability[0, 0].float().cpu().numpy() * 255).astype(np.uint8)
    return {"seconds": time.perf_counter() - start}


def run_compute(
    model_path: str, volume: str, out: str, input_size: int, threads: int, device: str, amp: str, compiled=False
) -> dict:
    import zarr
    from unet_pipeline.models.devices import autocast
    from unet_pipeline.models.unet import load_model

    torch.set_num_threads(threads)
    torch_device, dtype = precision(device, amp)
    model, _ = load_model(model_path, torch_device)
    step = model.config.geometry.tile_step(input_size)
    shape = zarr.open(volume, mode="r").shape
    chunk = min(shape[1], 1024), min(shape[2], 1024)
    per_chunk = math.ceil(chunk[0] / step) * math.ceil(chunk[1] / step)
    tiles = shape[0] * math.ceil(shape[1] / chunk[0]) * math.ceil(shape[2] / chunk[1]) * per_chunk
    batch = torch.randn(4, 1, input_size, input_size, device=torch_device)
    forward = torch.compile(model) if compiled else model
    with torch.no_grad(), autocast(torch_device, dtype):
        start = time.perf_counter()
        torch.softmax(forward(batch), dim=1).float().cpu()  # warm-up (and compilation)
        warm_up = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(math.ceil(tiles / 4)):
            torch.softmax(forward(batch), dim=1).float().cpu()  # to the host, as the stage's probabilities go
    return {"seconds": time.perf_counter() - start, "tiles": tiles, "warm_up_s": warm_up}


def run_compiled(*args) -> dict:
    return run_compute(*args, compiled=True)


def child(method, *args):
    sides = {"stage": run_stage, "monai": run_monai, "compute": run_compute, "compiled": run_compiled}
    result = sides[method](*args)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", nargs=3, type=int, default=[8, 16384, 16384])
    parser.add_argument("--input-size", type=int, default=508, help="tile size for both (legal for the model)")
    parser.add_argument("--model", type=Path, help="a trained model.pt (default: a random network of --preset)")
    parser.add_argument("--preset", default="laptop", help="the shipped preset whose network is used without --model")
    parser.add_argument("--compile", action="store_true", help="also time the compute side with torch.compile")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (the same for every side)")
    parser.add_argument("--amp", default="bf16", choices=["none", "bf16", "fp16"], help="autocast on CUDA (every side)")
    parser.add_argument("--child", nargs=8, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        method, model, volume, out, size, threads, device, amp = args.child
        child(method, model, volume, out, int(size), int(threads), device, amp)
        return
    with tempfile.TemporaryDirectory(dir=REPO / "results" if (REPO / "results").exists() else None) as folder:
        folder = Path(folder)
        model = args.model or preset_model(folder / "model.pt", args.preset)
        make_volume(folder / "volume.zarr", args.shape)
        voxels = int(np.prod(args.shape))
        device, dtype = precision(args.device, args.amp)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
        print(f"{name}; network: {args.model or 'random ' + args.preset}")
        print(
            f"volume {tuple(args.shape)} uint8 = {voxels / 2**30:.2f} GiB, tiles {args.input_size} px, "
            f"{args.threads} threads, "
            f"every side on {device} in {dtype or torch.float32}"
        )
        results = {}
        for method in ("stage", "monai", "compute") + (("compiled",) if args.compile else ()):
            command = [
                sys.executable,
                __file__,
                "--child",
                method,
                str(model),
                str(folder / "volume.zarr"),
                str(folder / f"{method}.zarr"),
                str(args.input_size),
                str(args.threads),
                args.device,
                args.amp,
            ]
            results[method] = json.loads(
                subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1]
            )
            print(
                f"{method:8s} {results[method]['seconds']:9.1f} s  "
                f"{voxels / results[method]['seconds'] / 1e6:8.2f} Mvoxel/s  "
                f"{1e3 * results[method]['seconds'] / args.shape[0]:9.1f} ms/section  "
                f"peak RSS {results[method]['peak_rss_mib']:8.0f} MiB"
            )
        stage, monai, compute = (results[m] for m in ("stage", "monai", "compute"))
        print(
            f"stage vs MONAI: {monai['seconds'] / stage['seconds']:.2f}x the speed, "
            f"{stage['peak_rss_mib'] / monai['peak_rss_mib']:.2f}x the peak memory"
        )
        print(
            f"tiling overhead of the stage: {stage['seconds'] / compute['seconds']:.2f}x "
            f"the pure compute time ({compute['tiles']} tiles)"
        )
        if args.compile:
            compiled = results["compiled"]
            print(
                f"torch.compile: {compute['seconds'] / compiled['seconds']:.2f}x the compute speed, "
                f"compiling took {compiled['warm_up_s']:.1f} s"
            )


if __name__ == "__main__":
    main()
