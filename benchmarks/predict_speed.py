"""Prediction throughput and peak memory: the predict stage vs MONAI's sliding_window_inference.

    pip install -r benchmarks/requirements.txt      # MONAI, for the comparison only
    python benchmarks/predict_speed.py [--shape 8 16384 16384] [--input-size 508] [--batch-size 4] [--preset laptop]
                                       [--model results/isbi2012/models/laptop/model.pt] [--device auto] [--amp bf16]
                                       [--sides stage monai compute] [--tta] [--compile]

A synthetic uint8 volume of --shape (random gray values, written chunk by chunk
to Zarr) is predicted by each of --sides (default: the first three below), each in
its own subprocess so that peak RSS is its own:

- stage: unet_pipeline.stages.predict.predict_volume (Zarr in, Zarr out, chunk by chunk), test-time
  augmentation off; ``stage_tta`` (--tta adds it) with its 8 views, ``stage_compiled`` (--compile adds
  it and ``compiled``) with ``prediction.compile``, compile time included;
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
is ISBI's test volume); a large volume gives the steady throughput. Each side's line
is printed when it ends; a side that fails prints its error and the others still run
(the ratios print for the sides that ran).

Every side runs on the same device (--device, default: CUDA when present) with
the same tile (--input-size), batch (--batch-size) and precision (--amp: bf16
autocast on CUDA, as the stage does; float32 on the CPU), and the output says which.

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


def run_stage(run: dict, tta: bool = False, compiled: bool = False) -> dict:
    from unet_pipeline.stages.predict import predict_volume

    options = {key: run[key] for key in ("batch_size", "device", "amp", "threads", "input_size")}
    start = time.perf_counter()
    predict_volume(run["model"], run["volume"], run["out"], tta=tta, compile=compiled, **options)
    return {"seconds": time.perf_counter() - start}


def run_stage_tta(run: dict) -> dict:
    return run_stage(run, tta=True)


def run_stage_compiled(run: dict) -> dict:
    return run_stage(run, compiled=True)


def run_monai(run: dict) -> dict:
    import zarr
    from monai.inferers import sliding_window_inference
    from unet_pipeline.inference.overlap_tile import normalise
    from unet_pipeline.models.devices import autocast
    from unet_pipeline.models.unet import load_model

    torch.set_num_threads(run["threads"])
    torch_device, dtype = precision(run["device"], run["amp"])
    model, metadata = load_model(run["model"], torch_device)
    geometry, input_size = model.config.geometry, run["input_size"]
    output, margin, step = geometry.output_size(input_size), geometry.margin(input_size), geometry.tile_step(input_size)

    class MirrorPadded(torch.nn.Module):
        """The same network, its input mirror-padded by the context margin: output size = input size."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return torch.softmax(self.net(torch.nn.functional.pad(x, (margin,) * 4, mode="reflect")), dim=1)[:, 1:]

    wrapped = MirrorPadded(model).eval()
    image = zarr.open(run["volume"], mode="r")
    target = zarr.create_array(run["out"], shape=image.shape, chunks=image.chunks, dtype="uint8")
    start = time.perf_counter()
    with torch.no_grad(), autocast(torch_device, dtype):
        for z in range(image.shape[0]):
            section = torch.from_numpy(normalise(image[z], metadata["normalisation"]))[None, None].to(torch_device)
            probability = sliding_window_inference(
                section,
                (output, output),
                run["batch_size"],
                wrapped,
                overlap=(output - step) / output,
                mode="constant",
                padding_mode="reflect",
            )
            target[z] = np.rint(probability[0, 0].float().cpu().numpy() * 255).astype(np.uint8)
    return {"seconds": time.perf_counter() - start}


def run_compute(run: dict, compiled: bool = False) -> dict:
    import zarr
    from unet_pipeline.models.devices import autocast
    from unet_pipeline.models.unet import load_model

    torch.set_num_threads(run["threads"])
    torch_device, dtype = precision(run["device"], run["amp"])
    model, _ = load_model(run["model"], torch_device)
    input_size, batch_size = run["input_size"], run["batch_size"]
    step = model.config.geometry.tile_step(input_size)
    shape = zarr.open(run["volume"], mode="r").shape
    chunk = min(shape[1], 1024), min(shape[2], 1024)
    per_chunk = math.ceil(chunk[0] / step) * math.ceil(chunk[1] / step)
    tiles = shape[0] * math.ceil(shape[1] / chunk[0]) * math.ceil(shape[2] / chunk[1]) * per_chunk
    batch = torch.randn(batch_size, 1, input_size, input_size, device=torch_device)
    forward = torch.compile(model) if compiled else model
    with torch.no_grad(), autocast(torch_device, dtype):
        start = time.perf_counter()
        torch.softmax(forward(batch), dim=1).float().cpu()  # warm-up (and compilation)
        warm_up = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(math.ceil(tiles / batch_size)):
            torch.softmax(forward(batch), dim=1).float().cpu()  # to the host, as the stage's probabilities go
    return {"seconds": time.perf_counter() - start, "tiles": tiles, "warm_up_s": warm_up}


def run_compiled(run: dict) -> dict:
    return run_compute(run, compiled=True)


SIDES = {
    "stage": run_stage,
    "stage_tta": run_stage_tta,
    "stage_compiled": run_stage_compiled,
    "monai": run_monai,
    "compute": run_compute,
    "compiled": run_compiled,
}


def child(method: str, run: dict):
    result = SIDES[method](run)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def arguments():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", nargs=3, type=int, default=[8, 16384, 16384])
    parser.add_argument("--input-size", type=int, default=508, help="tile size for every side (legal for the model)")
    parser.add_argument("--batch-size", type=int, default=4, help="network inputs per pass, for every side")
    parser.add_argument("--model", type=Path, help="a trained model.pt (default: a random network of --preset)")
    parser.add_argument("--preset", default="laptop", help="the shipped preset whose network is used without --model")
    parser.add_argument("--sides", nargs="+", choices=SIDES, default=["stage", "monai", "compute"])
    parser.add_argument("--tta", action="store_true", help="also run the stage with test-time augmentation")
    parser.add_argument("--compile", action="store_true", help="also run the stage and the compute side compiled")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (the same for every side)")
    parser.add_argument("--amp", default="bf16", choices=["none", "bf16", "fp16"], help="autocast on CUDA (every side)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    return parser.parse_args()


def measure(method: str, run: dict):
    """One side in its own process (its peak RSS is its own).

    Returns:
        The side's figures, or None when it failed (its error is printed).
    """
    command = [sys.executable, __file__, "--child", method, json.dumps(run)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        print(f"{method:15s} failed (exit {done.returncode}): {last}", flush=True)
        return None
    return json.loads(done.stdout.splitlines()[-1])


def print_side(method: str, result: dict, shape, voxels: int) -> None:
    print(
        f"{method:15s} {result['seconds']:9.2f} s  {voxels / result['seconds'] / 1e6:8.2f} Mvoxel/s  "
        f"{1e3 * result['seconds'] / shape[0]:9.1f} ms/section  peak RSS {result['peak_rss_mib']:8.0f} MiB",
        flush=True,
    )


def report(results: dict) -> None:
    """The ratios the prediction issue asks for, of the sides that ran: the stage against MONAI and the
    network, TTA against none, compiled against not."""
    stage, monai, compute = (results.get(m) for m in ("stage", "monai", "compute"))
    tta, compiled, stage_compiled = (results.get(m) for m in ("stage_tta", "compiled", "stage_compiled"))
    if stage and monai:
        print(
            f"stage vs MONAI: {monai['seconds'] / stage['seconds']:.2f}x the speed, "
            f"{stage['peak_rss_mib'] / monai['peak_rss_mib']:.2f}x the peak memory"
        )
    if stage and compute:
        print(
            f"stage vs the network alone: {compute['seconds'] / stage['seconds']:.2f}x its speed "
            f"({compute['tiles']} tiles)"
        )
    if stage and tta:
        print(f"stage with TTA: {stage['seconds'] / tta['seconds']:.2f}x the rate without")
    if compute and compiled:
        print(
            f"torch.compile: the network {compute['seconds'] / compiled['seconds']:.2f}x "
            f"(compiling {compiled['warm_up_s']:.1f} s)"
        )
    if stage and stage_compiled:
        print(f"torch.compile: the stage {stage['seconds'] / stage_compiled['seconds']:.2f}x (compile time included)")


def main():
    args = arguments()
    if args.child:
        child(args.child[0], json.loads(args.child[1]))
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
            f"volume {tuple(args.shape)} uint8 = {voxels / 2**30:.2f} GiB, tiles {args.input_size} px, batch "
            f"{args.batch_size}, {args.threads} threads, every side on {device} in {dtype or torch.float32}"
        )
        run = {"model": str(model), "volume": str(folder / "volume.zarr"), "input_size": args.input_size}
        run |= {"batch_size": args.batch_size, "threads": args.threads, "device": args.device, "amp": args.amp}
        methods = args.sides + ["stage_tta"] * args.tta + ["stage_compiled", "compiled"] * args.compile
        results = {}
        for method in dict.fromkeys(methods):
            result = measure(method, run | {"out": str(folder / f"{method}.zarr")})
            if result is not None:
                print_side(method, result, args.shape, voxels)
                results[method] = result
        report(results)


if __name__ == "__main__":
    main()
