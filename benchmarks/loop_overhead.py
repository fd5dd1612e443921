"""The training loop's step against the bare network step, in turns in one process, for any preset.

    python benchmarks/loop_overhead.py [--preset laptop] [--rounds 4] [--steps 100] [--device auto]
    python benchmarks/loop_overhead.py --preset paper --trivial    # the host's share alone
    python benchmarks/loop_overhead.py --loop-only [--glibc-defaults]    # the loop alone, allocator as set or not

The loop is ``Trainer.train_step`` as the train rule runs it, on ``--samples`` tiles augmented
from ISBI training sections with the paper's weight maps (``optimiser_check.augmented_tiles``,
held on the device as ``batches.DeviceBatches`` holds a set that fits), followed at the end of
each round by the loop's one wait per log window (``Trainer.checked_mean``). The bare step is
``train_speed.py``'s (random tiles already on the device, no batch drawing), with the precision
the trainer uses on this device. Both run ``--rounds`` times in turns, since these CPUs drift by
several per cent within minutes; printed: each round's rates and the loop's share of the bare rate.

The process keeps freed memory for reuse as the train rule does (``core.allocator``), unless
``--glibc-defaults``. Whether that pays shows in the loop alone (``--loop-only``, no bare steps in
between, as the train rule runs), in separate runs with and without it.

``--trivial`` replaces the network by a module that crops the input to the output tile and scales
it into two logits (the same batches, loss and optimiser calls): the loop's steps per second then
measure what the host does per step, which must stay well above the GPU's bare step rate. On the
CPU that includes computing the loss and its gradient, which on a GPU run there; ``--parts``
prints each part's milliseconds (batch, module, loss forward and backward, optimiser step).
"""

import argparse
import resource
import tempfile
import time

import tifffile
import torch
from shipped_workflow import ISBI_DATA as ISBI
from shipped_workflow import cpu_model, shipped_config
from train_speed import measure
from unet_pipeline.core.allocator import keep_freed_memory
from unet_pipeline.models.tile_geometry import geometry_of
from unet_pipeline.training.optimiser_check import augmented_tiles, preset_trainer


class Trivial(torch.nn.Module):
    """(n, 1, in, in) -> (n, 2, out, out): the central output tile, times one learned scale per class."""

    def __init__(self, margin: int):
        super().__init__()
        self.margin, self.scale = margin, torch.nn.Parameter(torch.tensor([1.0, -1.0]).view(1, 2, 1, 1))

    def forward(self, x):
        return x[:, :, self.margin : -self.margin, self.margin : -self.margin] * self.scale


def make_trainer(preset: dict, samples: int, folder: str, device: str):
    """The preset's trainer on ``samples`` augmented ISBI tiles."""
    size = preset["input_size"]
    tile = (size, geometry_of(preset["model"]).output_size(size))
    sections = list(range(0, 20, 4))
    image = tifffile.imread(ISBI / "train-volume.tif")[sections]
    labels = tifffile.imread(ISBI / "train-labels.tif")[sections]
    arrays, normalisation = augmented_tiles(image, labels, tile, samples, shipped_config()["augmentation"])
    return preset_trainer(preset, arrays, normalisation, folder, device), tile


def trivialised(trainer, tile):
    """The trainer with its network replaced by ``Trivial`` (and its optimiser by one over that module)."""
    module = Trivial((tile[0] - tile[1]) // 2).to(trainer.device)
    trainer.forward = trainer.parts.model = module
    trainer.parts.optimizer = type(trainer.optimizer)(module.parameters(), lr=1e-6)
    return trainer


def part_milliseconds(trainer, steps: int) -> dict:
    """Each part of a training step alone, in ms (the device waited for after each): batch, module, loss, step."""
    from unet_pipeline.training.loss import weighted_cross_entropy

    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    inputs, labels, weights = trainer.parts.batches(0)

    def forward_backward():
        loss = weighted_cross_entropy(trainer.forward(inputs), labels, weights)
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()

    parts = {
        "batch": lambda: trainer.parts.batches(1),
        "module forward": lambda: trainer.forward(inputs),
        "module and loss, forward and backward": forward_backward,
        "optimiser step": trainer.optimizer.step,
    }
    found = {}
    for name, part in parts.items():
        part()
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            part()
        sync()
        found[name] = (time.perf_counter() - start) / steps * 1e3
    return found


def loop_seconds(trainer, steps: int) -> float:
    start = time.perf_counter()
    losses = [trainer.train_step() for _ in range(steps)]
    trainer.checked_mean(losses)  # waits for the device, as the loop does once per log window
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="laptop", help="a preset of config/config.yaml")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--samples", type=int, default=64, help="augmented tiles the loop draws from")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--trivial", action="store_true", help="a trivial module in place of the network")
    parser.add_argument("--parts", action="store_true", help="also time each part of a step alone")
    parser.add_argument("--loop-only", action="store_true", help="the loop alone in its process, as in the train rule")
    parser.add_argument(
        "--glibc-defaults", action="store_true", help="without the train rule's allocator setting (keep_freed_memory)"
    )
    args = parser.parse_args()
    kept = not args.glibc_defaults and keep_freed_memory()
    preset = shipped_config()["presets"][args.preset]
    with tempfile.TemporaryDirectory() as folder:
        trainer, tile = make_trainer(preset, args.samples, folder, args.device)
        if args.trivial:
            trainer = trivialised(trainer, tile)
        device, batch = trainer.device, trainer.options.batch_size
        where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
        amp = {torch.bfloat16: "bf16", torch.float16: "fp16", None: "none"}[trainer.parts.precision]
        print(f"device: {where}, {torch.get_num_threads()} threads; preset {args.preset}, batch {batch}, tiles {tile}")
        print(f"precision {amp}{', trivial module' if args.trivial else ''}, {args.samples} augmented tiles")
        print(f"freed memory {'kept for reuse' if kept else 'returned to the system (glibc defaults)'}")
        trainer.model.train()
        loop_seconds(trainer, 3)  # warm-up, as measure() warms up its own model
        loop_total = bare_total = 0.0
        for round_ in range(1, args.rounds + 1):
            loop = loop_seconds(trainer, args.steps)
            loop_total += loop
            line = f"round {round_}: loop {args.steps / loop:.1f} steps/s ({args.steps * batch / loop:.1f} tiles/s)"
            if not (args.trivial or args.loop_only):
                bare = args.steps * measure(preset, amp, args.steps, device, "channels_last")["step_s"]
                bare_total += bare
                line += f", bare {args.steps * batch / bare:.1f} tiles/s"
            print(line, flush=True)
        if args.parts:
            print("parts (ms):", {name: round(ms, 2) for name, ms in part_milliseconds(trainer, args.steps).items()})
    if args.trivial or args.loop_only:
        module = "a trivial module" if args.trivial else "the network"
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"loop with {module}: {args.rounds * args.steps / loop_total:.1f} steps/s, peak RSS {peak:.0f} MiB")
    else:
        print(f"loop / bare over all rounds: {bare_total / loop_total:.3f}")


if __name__ == "__main__":
    main()
