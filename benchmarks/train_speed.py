"""Training throughput of the presets: tiles per second, peak memory, fraction of peak FLOP/s.

    python benchmarks/train_speed.py [--presets laptop paper] [--steps 20] [--amp none bf16]
                                     [--peak-tflops none=494.7 bf16=989.4]   # H100 SXM: dense TF32, dense bf16
                                     [--variants plain channels_last compile]
                                     [--norm none batch instance group] [--input-size 284 --batch-size 2]
                                     [--profile 12]

Runs the training step of unet_pipeline.stages.train (forward, weighted cross-entropy,
backward, optimiser step) on random tiles of each preset's size and batch, after
a few warm-up steps, on CUDA when present (else the CPU with all its cores).
FLOPs per step come from torch's FlopCounterMode on the network (forward and
backward), so the fraction of peak is model FLOPs / time / peak. --peak-tflops takes
one number for every --amp, or one per amp as amp=TFLOPS: on CUDA, float32 ("none")
convolutions run on the tensor cores in TF32 (PyTorch's default for cuDNN), so their
peak is the card's dense TF32 figure, bf16's its dense bf16 figure.

Every preset runs with each --amp (bf16 also on a CPU: autocast there uses the
CPU's bf16 instructions where it has them, avx512_bf16 or AMX, see ``lscpu``) and
each variant: plain, channels_last memory format, torch.compile (the first steps,
which compile, are warm-up). ``--norm`` measures each preset with each ``model.norm`` in turn; ``--input-size``
and ``--batch-size`` replace the presets' tile and batch. The output pixels per second column compares tiles of
different sizes (an unpadded network's border is a smaller share of a larger tile). ``--profile N`` adds, under
each row, the N operators that took most of 5 more steps (torch.profiler, self time: the time of each kernel
itself, the share of the steps' total).
"""

import argparse
import copy
import itertools
import resource
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

import torch
import yaml
from shipped_workflow import cpu_model
from torch.utils.flop_counter import FlopCounterMode
from unet_pipeline.models.devices import AMP_DTYPES, autocast
from unet_pipeline.models.unet import UNetConfig, build_model, count_parameters
from unet_pipeline.training.loss import weighted_cross_entropy
from unet_pipeline.training.optimisation import make_optimizer
from unet_pipeline.training.options import TrainingOptions


def step_flops(model, batch, size) -> int:
    x = torch.randn(batch, 1, size, size, device=next(model.parameters()).device)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def operator_shares(one_step, top: int, steps: int = 5) -> list[tuple[str, float, float]]:
    """The ``top`` operators by self time over ``steps`` calls of ``one_step``: (name, ms per step, share)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        for _ in range(steps):
            one_step()
    events = [event for event in profiler.key_averages() if event.self_cpu_time_total > 0]
    total = sum(event.self_cpu_time_total for event in events)
    events.sort(key=lambda event: event.self_cpu_time_total, reverse=True)
    return [(e.key, e.self_cpu_time_total / steps / 1e3, e.self_cpu_time_total / total) for e in events[:top]]


def step_shape(preset: dict) -> tuple[int, int, int]:
    """The preset's input tile, tiles per step and output tile."""
    size = preset["input_size"]
    return size, preset["training"].get("batch_size", 1), UNetConfig(**preset["model"]).geometry.output_size(size)


def training_step(preset: dict, amp: str, device: torch.device, variant: str):
    """The train stage's step on random tiles of ``preset``'s size and batch: (model, step function, FLOPs per step)."""
    size, batch, out = step_shape(preset)
    model = build_model(UNetConfig(**preset["model"])).to(device)
    channels_last = variant == "channels_last" or (device.type == "cuda" and variant != "plain")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    options = TrainingOptions(
        **{k: v for k, v in preset["training"].items() if k in TrainingOptions.__dataclass_fields__}
    )
    optimizer = make_optimizer(model, options)
    flops = step_flops(model, batch, size)
    forward = torch.compile(model) if variant == "compile" else model
    x = torch.randn(batch, 1, size, size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch, out, out), device=device)
    w = torch.rand(batch, out, out, device=device) + 0.5
    dtype = AMP_DTYPES[amp]  # on the CPU too: what autocast gains there is what this measures

    def one_step():
        with autocast(device, dtype):
            logits = forward(x)
        loss = weighted_cross_entropy(logits, y, w)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return model, one_step, flops


def timed(one_step, steps: int, device: torch.device) -> tuple[float, float]:
    """Seconds for ``steps`` steps after 3 warm-up steps, and the peak memory in MiB (the GPU's, or the process's)."""
    for _ in range(3):
        one_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        one_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    if device.type == "cuda":
        return elapsed, torch.cuda.max_memory_allocated() / 2**20
    return elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(preset: dict, amp: str, steps: int, device: torch.device, variant: str = "plain", profile: int = 0) -> dict:
    model, one_step, flops = training_step(preset, amp, device, variant)
    elapsed, peak = timed(one_step, steps, device)
    size, batch, out = step_shape(preset)
    return {
        "parameters": count_parameters(model),
        "tiles_per_s": steps * batch / elapsed,
        "step_s": elapsed / steps,
        "tflops": flops * steps / elapsed / 1e12,
        "peak_mib": peak,
        "size": size,
        "out": out,
        "batch": batch,
        "operators": operator_shares(one_step, profile) if profile else [],
    }


def peaks(values: list[str], amps: list[str]) -> dict:
    """--peak-tflops as {amp: TFLOP/s}: one bare number for every amp, or amp=number pairs."""
    if len(values) == 1 and "=" not in values[0]:
        return dict.fromkeys(amps, float(values[0]))
    pairs = dict(value.split("=", 1) for value in values)
    return {amp: float(pairs[amp]) for amp in amps if amp in pairs}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["laptop", "paper"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--amp", nargs="+", default=["none", "bf16"], choices=sorted(AMP_DTYPES))
    parser.add_argument(
        "--peak-tflops", nargs="+", default=[], help="the device's peak TFLOP/s (N, or amp=N per amp), for the fraction"
    )
    parser.add_argument("--variants", nargs="+", default=["plain"], choices=["plain", "channels_last", "compile"])
    parser.add_argument("--norm", nargs="+", choices=["none", "batch", "instance", "group"], help="model.norm")
    parser.add_argument("--input-size", type=int, help="the tile, in place of each preset's")
    parser.add_argument("--batch-size", type=int, help="tiles per step, in place of each preset's")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="the N costliest operators per row")
    args = parser.parse_args()
    peak = peaks(args.peak_tflops, args.amp) if args.peak_tflops else {}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(torch.get_num_threads())
    presets = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["presets"]
    name = (
        torch.cuda.get_device_name() if device.type == "cuda" else f"{cpu_model()}, {torch.get_num_threads()} threads"
    )
    print(f"device: {name}")
    print(
        f"{'preset':8s} {'amp':5s} {'variant':13s} {'norm':8s} {'tile':>10s} {'batch':>5s} {'tiles/s':>9s} "
        f"{'kpx/s out':>9s} {'s/step':>8s} "
        f"{'TFLOP/s':>8s} {'peak MiB':>9s}" + ("  of peak" if peak else "")
    )
    for preset in args.presets:
        for amp, variant, norm in itertools.product(args.amp, args.variants, args.norm or [None]):
            chosen = copy.deepcopy(presets[preset])
            # a preset names only what departs from the schema: the paper preset has no model section
            chosen.setdefault("model", {}).update({"norm": norm} if norm else {})
            chosen["input_size"] = args.input_size or chosen["input_size"]
            training = chosen.setdefault("training", {})
            training["batch_size"] = args.batch_size or training.get("batch_size", 1)
            r = measure(chosen, amp, args.steps, device, variant, args.profile)
            fraction = f"  {r['tflops'] / peak[amp]:7.1%}" if amp in peak else ""
            print(
                f"{preset:8s} {amp:5s} {variant:13s} {chosen['model'].get('norm', 'none'):8s} "
                f"{r['size']:>4d}->{r['out']:<4d} {r['batch']:5d} {r['tiles_per_s']:9.2f} "
                f"{r['tiles_per_s'] * r['out'] ** 2 / 1e3:9.0f} {r['step_s']:8.3f} "
                f"{r['tflops']:8.3f} {r['peak_mib']:9.0f}{fraction}",
                flush=True,
            )
            for operator, milliseconds, share in r["operators"]:
                print(f"    {operator:48s} {milliseconds:8.2f} ms/step {share:6.1%}")


if __name__ == "__main__":
    main()
