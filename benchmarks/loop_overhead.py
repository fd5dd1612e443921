"""The training loop's step against the bare network step, interleaved in one process.

    python benchmarks/loop_overhead.py --results <a laptop_accuracy.py folder> [--rounds 4] [--steps 100]

``laptop_accuracy.py`` prints the loop's rate over a whole run beside the bare step
measured before and after it, minutes apart, and these CPUs drift by several per
cent within minutes. Here both run in turns in one process: ``--steps`` steps of
``Trainer.train_step`` on the run's augmented ISBI set (batch drawing, normalisation,
loss, the finite check: all the loop does per step) and as many steps of
``train_speed.py``'s bare step (random tiles already in memory), ``--rounds`` times,
both with the laptop preset's settings and the process's threads. Prints each
round's rates and the loop's share of the bare rate over all rounds. Validation
and checkpoints, the loop's other work, are a few seconds per 2000 steps (the
train log's timestamps).
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch
from shipped_workflow import cpu_model, shipped_config
from train_speed import measure
from unet_pipeline.train import Trainer, TrainingJob, TrainingOptions, open_training_data
from unet_pipeline.unet import UNetConfig


def laptop_trainer(results: Path, checkpoints: str) -> tuple[Trainer, dict]:
    """A Trainer of the shipped laptop preset on ``results``' augmented ISBI set, and the preset."""
    preset = shipped_config()["presets"]["laptop"]
    dataset = results / "isbi2012"
    job = TrainingJob(
        augmented=str(dataset / "augmented" / "laptop.zarr"),
        volume=str(dataset / "volume.zarr"),
        outputs={},
        checkpoints=checkpoints,
        model=UNetConfig(**preset["model"]),
        options=TrainingOptions(**preset["training"]),
    )
    for path in (job.augmented, job.volume):
        if not Path(path).is_dir():
            raise SystemExit(f"{path}: not found; --results must be a finished laptop_accuracy.py folder")
    return Trainer(open_training_data(job.augmented, job.volume, job.model.geometry), job), preset


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, required=True, help="a finished laptop_accuracy.py folder")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as checkpoints:
        trainer, preset = laptop_trainer(args.results.resolve(), checkpoints)
        tiles = args.steps * trainer.options.batch_size
        print(
            f"device: {cpu_model()}, {torch.get_num_threads()} threads; laptop preset, batch {trainer.options.batch_size}"
        )
        trainer.train_step()  # warm-up, as measure() warms up its own model
        loop_total = bare_total = 0.0
        for round_ in range(1, args.rounds + 1):
            start = time.perf_counter()
            for _ in range(args.steps):
                trainer.train_step()
            loop = time.perf_counter() - start
            bare = (
                args.steps * measure(preset, trainer.options.amp, args.steps, trainer.device, "channels_last")["step_s"]
            )
            loop_total, bare_total = loop_total + loop, bare_total + bare
            print(f"round {round_}: loop step {tiles / loop:.1f} tiles/s, bare {tiles / bare:.1f}")
    print(f"loop / bare over all rounds: {bare_total / loop_total:.3f}")


if __name__ == "__main__":
    main()
