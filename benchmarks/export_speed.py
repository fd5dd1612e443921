"""Why the export stage takes half a minute: torch's ONNX exporters on the laptop network, each in a fresh process.

    python export_speed.py [--rounds 2] [--levels 4 --base-channels 16 --tile 188]

Each variant exports the packaged network (normalisation, U-Net, softmax) with a dynamic batch, height and width,
as ``stages/export.py`` does, in its own process (as the rule runs it: nothing cached), then checks the file with
onnxruntime against PyTorch on three legal shapes. Variants, run in turns:

- ``dynamo``: ``torch.onnx.export(dynamo=True)`` with ``Dim.AUTO`` height and width;
- ``dynamo-dynamic``: the same with ``Dim.DYNAMIC`` (the export stage's);
- ``dynamo-one-tile``: the same for one tile, only the batch dynamic (what a predict job on the CPU exports for
  ONNX Runtime), checked on that tile alone;
- ``dynamo-no-optimize``: the same as ``dynamo`` without onnxscript's graph optimisation;
- ``torchscript``: the TorchScript exporter (``dynamo=False``), deprecated since torch 2.9.

Prints seconds per export, the exporter's share of the process, file size and the largest difference to PyTorch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

VARIANTS = ("dynamo", "dynamo-dynamic", "dynamo-one-tile", "dynamo-no-optimize", "torchscript")


def child(variant: str, levels: int, base_channels: int, tile: int) -> dict:
    started = time.perf_counter()
    import numpy as np
    import onnxruntime
    import torch
    from unet_pipeline.models.unet import UNet, UNetConfig
    from unet_pipeline.stages.export import OPSET, Packaged, tile_sizes

    imported = time.perf_counter()
    torch.manual_seed(0)
    packaged = Packaged(UNet(UNetConfig(levels=levels, base_channels=base_channels)).eval(), {"mean": 0.5, "std": 0.2})
    example = torch.rand(1, 1, tile, tile) * 255
    path = os.path.join(tempfile.mkdtemp(), "m.onnx")
    begin = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if variant == "torchscript":
            axes = {0: "batch", 2: "y", 3: "x"}
            torch.onnx.export(
                packaged, (example,), path, dynamo=False, opset_version=OPSET, input_names=["raw"],
                output_names=["probability"], dynamic_axes={"raw": axes, "probability": axes},
            )  # fmt: skip
        else:
            size = torch.export.Dim.DYNAMIC if variant == "dynamo-dynamic" else torch.export.Dim.AUTO
            dims = {0: torch.export.Dim("batch", min=1, max=1024)}
            dims |= {} if variant == "dynamo-one-tile" else {2: size, 3: size}
            program = torch.onnx.export(
                packaged, (example,), dynamo=True, opset_version=OPSET, dynamic_shapes=(dims,),
                optimize=variant != "dynamo-no-optimize", verbose=False,
            )  # fmt: skip
            program.save(path)
    exported = time.perf_counter() - begin
    metadata = {"model": {"architecture": "unet", "levels": levels, "base_channels": base_channels}}
    minimum, step, _ = tile_sizes(metadata)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    difference = 0.0
    shapes = [(1, 1, tile, tile), (3, 1, minimum, minimum), (2, 1, minimum + 5 * step, minimum + 2 * step)]
    for shape in shapes[:1] if variant == "dynamo-one-tile" else shapes:
        raw = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
        result = session.run(None, {session.get_inputs()[0].name: raw})[0]
        with torch.no_grad():
            reference = packaged(torch.from_numpy(raw)).numpy()
        difference = max(difference, float(np.abs(result - reference).max()))
    return {
        "variant": variant,
        "export_s": exported,
        "imports_s": imported - started,
        "process_s": time.perf_counter() - started,
        "bytes": os.path.getsize(path),
        "max_difference": difference,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--tile", type=int, default=188)
    parser.add_argument("--child")
    args = parser.parse_args()
    shape = [str(args.levels), str(args.base_channels), str(args.tile)]
    if args.child:
        print(json.dumps(child(args.child, args.levels, args.base_channels, args.tile)))
        return
    with open("/proc/cpuinfo") as info:
        cpu = next((line.split(":", 1)[1].strip() for line in info if "model name" in line), "?")
    print(f"CPU: {cpu}; U-Net {args.levels} levels, {args.base_channels} channels, tile {args.tile}")
    print(f"{'variant':20} {'export_s':>9} {'process_s':>10} {'MB':>6} {'max |ONNX - torch|':>19}")
    for _ in range(args.rounds):
        for variant in VARIANTS:
            command = [sys.executable, __file__, "--child", variant, "--levels", *shape[:1]]
            command += ["--base-channels", shape[1], "--tile", shape[2]]
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                print(f"{variant:20} failed: {result.stderr.strip().splitlines()[-1:]}")
                continue
            row = json.loads(result.stdout.strip().splitlines()[-1])
            print(
                f"{variant:20} {row['export_s']:9.1f} {row['process_s']:10.1f} {row['bytes'] / 1e6:6.2f} "
                f"{row['max_difference']:19.2e}",
                flush=True,
            )


if __name__ == "__main__":
    main()
