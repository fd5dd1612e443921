"""The laptop network on the CPU: PyTorch against ONNX Runtime and OpenVINO, in turns in one process.

    pip install -r benchmarks/requirements.txt      # OpenVINO, for this comparison only
    python benchmarks/cpu_runtimes.py [--sizes 188 380] [--batch-size 4] [--batches 6] [--rounds 3] [--threads 2]

The network is the laptop preset's (random weights: speed does not depend on them), packaged as the export stage
packages it (normalisation, U-Net, softmax) and exported with the stage's own ``export_onnx`` (checked against
PyTorch there). Each runtime predicts ``--batches`` batches of random tiles of each size after one warm-up
batch; the runtimes take turns for ``--rounds`` rounds, so a drift of the machine's speed reaches them all.
Prediction with test-time augmentation is 8 of these forward passes per tile, so the ratios carry over.

- ``torch``: float32, ``torch.no_grad``, as the predict stage runs on the CPU (``devices.amp_dtype``);
- ``onnxruntime``: the CPU execution provider, all graph optimisations;
- ``openvino``: the CPU plugin with f32 inference precision (the same numbers as PyTorch), and ``openvino-bf16``
  with its default precision on a CPU with bf16 instructions (faster, other numbers: its difference is printed).

Prints tiles/s per runtime and size (median over rounds), the ratio to PyTorch, and the largest difference of the
probabilities to PyTorch's.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from unet_pipeline.models.unet import UNet, UNetConfig
from unet_pipeline.stages.export import Packaged, export_onnx


def runtimes(onnx_path: Path, packaged, threads: int) -> dict:
    """Name -> function from a float32 batch (b, 1, y, x) to probabilities."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run_torch(batch):
        with torch.no_grad():
            return packaged(torch.from_numpy(batch)).numpy()

    found = {"torch": run_torch, "onnxruntime": lambda batch: session.run(None, {name: batch})[0]}
    try:
        import openvino as ov
    except ImportError:
        return found
    core = ov.Core()
    model = core.read_model(str(onnx_path))
    for label, precision in (("openvino", "f32"), ("openvino-bf16", None)):
        config = {"INFERENCE_NUM_THREADS": threads} | ({"INFERENCE_PRECISION_HINT": precision} if precision else {})
        compiled = core.compile_model(model, "CPU", config)
        found[label] = lambda batch, compiled=compiled: compiled(batch)[0]
    return found


def rate(run, batches: list[np.ndarray]) -> float:
    run(batches[0])  # warm-up: allocations, kernel choice
    started = time.perf_counter()
    for batch in batches:
        run(batch)
    return sum(len(batch) for batch in batches) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[188, 380])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    packaged = Packaged(UNet(UNetConfig(levels=4, base_channels=16)).eval(), {"mean": 0.5, "std": 0.2}).eval()
    rng = np.random.default_rng(0)
    with open("/proc/cpuinfo") as info:
        cpu = next((line.split(":", 1)[1].strip() for line in info if "model name" in line), "?")
    print(f"CPU: {cpu}, {args.threads} threads; laptop network; batch {args.batch_size} x {args.batches}", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        onnx_path = Path(folder) / "laptop.onnx"
        example = rng.uniform(0, 255, (1, 1, args.sizes[0], args.sizes[0])).astype(np.float32)
        export_onnx(packaged, example, onnx_path)
        found = runtimes(onnx_path, packaged, args.threads)
        for size in args.sizes:
            shape = (args.batch_size, 1, size, size)
            batches = [rng.uniform(0, 255, shape).astype(np.float32) for _ in range(args.batches)]
            reference = found["torch"](batches[0])
            rates = {label: [] for label in found}
            for _ in range(args.rounds):
                for label, run in found.items():
                    rates[label].append(rate(run, batches))
            base = statistics.median(rates["torch"])
            for label, run in found.items():
                difference = float(np.abs(np.asarray(run(batches[0])) - reference).max())
                median = statistics.median(rates[label])
                runs = ", ".join(f"{r:.1f}" for r in rates[label])
                print(
                    f"tile {size:4}  {label:14} {median:6.1f} tiles/s ({runs})  x{median / base:.2f} of torch  "
                    f"max |p - torch| {difference:.1e}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
