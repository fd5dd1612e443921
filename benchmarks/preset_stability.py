"""A preset's optimiser for many steps on augmented ISBI tiles with weight maps: does it diverge?

    python benchmarks/preset_stability.py --preset paper [--tile 572] [--steps 60] \
        [--set learning_rate=0.01 --set schedule=constant ...]

The check of tests/training/test_optimiser_check.py (``optimiser_check.losses`` and ``verdict``), run longer,
at any tile size (default: the preset's) and with training options overridden by ``--set``, on the
CPU. Prints the CPU, the settings, seconds per step, the loss of every 5th step, the first non-finite
step if any, and the verdict. Tiles come from ISBI training sections 0, 5, 10, 15 (``--sections``).
"""

import argparse
import copy
import tempfile
import time

import numpy as np
import tifffile
import yaml
from shipped_workflow import ISBI_DATA as ISBI
from shipped_workflow import cpu_model, shipped_config
from unet_pipeline.models.tile_geometry import geometry_of
from unet_pipeline.training.optimiser_check import augmented_tiles, losses, verdict


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--tile", type=int, help="input tile size (default: the preset's)")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--sections", default="0,5,10,15")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a training option")
    args = parser.parse_args()
    preset = copy.deepcopy(shipped_config()["presets"][args.preset])
    preset.setdefault("training", {}).update(
        {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.set)}
    )
    size = args.tile or preset["input_size"]
    tile = (size, geometry_of(preset["model"]).output_size(size))
    picked = [int(z) for z in args.sections.split(",")]
    image = tifffile.imread(ISBI / "train-volume.tif")[picked]
    labels = tifffile.imread(ISBI / "train-labels.tif")[picked]
    samples = args.steps * preset["training"].get("batch_size", 1)
    arrays, normalisation = augmented_tiles(image, labels, tile, samples, shipped_config()["augmentation"])
    print(f"CPU: {cpu_model()}; preset {args.preset}, tiles {tile}, training {preset['training']}")
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        found = losses(preset, arrays, normalisation, args.steps, folder)
        seconds = (time.perf_counter() - start) / len(found)
    print(f"{seconds:.2f} s per step; loss every 5th step: {np.round(found[::5], 3).tolist()}")
    print(f"last 10: {np.round(found[-10:], 3).tolist()}")
    print(f"verdict: {verdict(found, args.steps) or 'trains'}")


if __name__ == "__main__":
    main()
