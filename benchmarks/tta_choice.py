"""What ``prediction.tta: auto`` chooses for a trained model, and what each way scores.

    python benchmarks/tta_choice.py --results /path/of/a/laptop_accuracy/run [--preset laptop]
                                    [--dataset isbi2012]

Loads the run's model, runs the train stage's choice (``training.validation.tta_choice``: the best
V_rand over the evaluation's thresholds on the validation sections, with TTA and without), and
beside it the same measure on the held-out test sections, which the choice never reads, so that
the choice can be checked against what it was meant to predict. Prints the CPU and the seconds.
"""

import argparse
import dataclasses
import time
from pathlib import Path

import torch
from shipped_workflow import cpu_model
from unet_pipeline.data import volume_store
from unet_pipeline.inference.overlap_tile import TilePredictor
from unet_pipeline.models.unet import load_model
from unet_pipeline.training.validation import tta_choice, v_rand_by_threshold


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--preset", default="laptop")
    parser.add_argument("--dataset", default="isbi2012")
    args = parser.parse_args()
    folder = args.results.resolve() / args.dataset
    model, metadata = load_model(folder / "models" / args.preset / "model.pt")
    volume = volume_store.open_store(folder / "volume.zarr")
    sections = volume_store.provenance(volume)["sections"]
    device = torch.device("cpu")
    predictor = TilePredictor(
        model.eval(), model.config.geometry, metadata["input_size"], metadata["normalisation"], device
    )
    start = time.perf_counter()
    choice = tta_choice(predictor, volume, sections["validation"])
    seconds = time.perf_counter() - start
    print(f"{cpu_model()}; {args.dataset} {args.preset}: the choice took {seconds:.1f} s")
    print(f"validation {sections['validation']}: {choice}")
    for tta in (False, True):
        curve = v_rand_by_threshold(dataclasses.replace(predictor, tta=tta), volume, sections["test"])
        at = choice["threshold"]["with" if tta else "without"]
        best = max(curve, key=curve.get)
        print(
            f"test {sections['test']}, TTA {tta}: V_rand {curve[at]:.6f} at the validation's best threshold {at}, "
            f"best {curve[best]:.6f} at {best}"
        )


if __name__ == "__main__":
    main()
