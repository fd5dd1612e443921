"""Validation's tile: the training tile against ``tile_choice.validation_size``, on whole validation sections.

    python benchmarks/validation_tiles.py MODEL [--data DIR] [--threads 2] [--rounds 2]

MODEL is a model file of the workflow (e.g. ``results/isbi2012/models/laptop/model.pt``). Validation during
training, and the TTA choice after it, predict the validation sections whole (``training.validation``); this
times that prediction, without TTA, on ISBI's sections 20-24 (512 x 512) and on the same sections of
``fine_tuning.py``'s ``zoomed`` proxy (768 x 1024), with the model's training tile and with the tile
``validation_size`` gives, the faster of ``--rounds`` rounds each, and prints the largest difference of their
probabilities: none is expected where the network is unpadded and has no per-tile statistics.
"""

import argparse
import time
from pathlib import Path

import fine_tuning
import numpy as np
import tifffile
import torch
from shipped_workflow import ISBI_DATA, cpu_model
from unet_pipeline.inference.overlap_tile import TilePredictor
from unet_pipeline.inference.tile_choice import validation_size
from unet_pipeline.models.unet import load_model

SECTIONS = slice(20, 25)


def timed(predictor: TilePredictor, sections: np.ndarray, rounds: int) -> tuple[float, list]:
    best, out = float("inf"), None
    for _ in range(rounds):
        start = time.perf_counter()
        out = [predictor.section(section) for section in sections]
        best = min(best, time.perf_counter() - start)
    return best, out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, default=ISBI_DATA)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, metadata = load_model(args.model)
    image = tifffile.imread(args.data / "train-volume.tif")
    stacks = {"isbi2012": image[SECTIONS], "zoomed": fine_tuning.zoomed(image, image)[0][SECTIONS]}
    training = metadata["input_size"]
    print(f"{cpu_model()}, {args.threads} threads; {args.model}")
    print("| sections | training tile | s | validation tile | s | speed-up | largest difference |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, sections in stacks.items():
        chosen = validation_size(model.config.geometry, training, sections.shape[1:])
        results = {}
        for size in (training, chosen):
            predictor = TilePredictor(
                model, model.config.geometry, size, metadata["normalisation"], torch.device("cpu")
            )
            results[size] = timed(predictor, sections, args.rounds)
        (slow, before), (fast, after) = results[training], results[chosen]
        difference = max(float(np.abs(a - b).max()) for a, b in zip(before, after))
        shape = "x".join(map(str, sections.shape))
        print(
            f"| {name} {shape} | {training} | {slow:.2f} | {chosen} | {fast:.2f} | {slow / fast:.2f}x | {difference:.1e} |"
        )


if __name__ == "__main__":
    main()
