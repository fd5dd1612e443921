"""A trained model on a stack of another pixel size: predicted as it is, and resampled to the model's pixel size.

    python benchmarks/resampling.py MODEL [--data DIR] [--proxies harder zoomed] [--threads 2]

MODEL is a model file of the workflow trained on ISBI 2012 (e.g. ``results/isbi2012/models/laptop/model.pt``).
Each proxy of ``fine_tuning.py`` whose pixel size differs from ISBI's (``PIXEL_SCALE``) is predicted zero-shot,
with the model's own normalisation and its TTA choice, in two ways:

- ``as it is``: each section at the proxy's pixels, as the predict rule predicts it today;
- ``resampled``: each section brought to the model's pixel size first (``skimage.transform.resize`` with
  anti-aliasing, linear), predicted, and the probabilities resized back (linear) to the section's shape, the
  way nnU-Net predicts at its training spacing.

Each is scored as the evaluate rule scores the thresholded probabilities: V_rand per section at every
threshold, the threshold chosen on the validation sections 20-24 by their mean, reported on 25-29. The
network runs in PyTorch at the model's tile size, so the as-it-is row can differ from the workflow's
zero-shot row (ONNX Runtime, the chosen tile) by about 0.001. The zoomed proxies are ISBI zoomed by an exact
factor, so resampling undoes the zoom up to interpolation: an upper bound of what resampling gives on a real
stack of another pixel size, where tissue and microscope differ too.
"""

import argparse
import functools
import time
from pathlib import Path

import fine_tuning
import numpy as np
import tifffile
import torch
from shipped_workflow import ISBI_DATA, cpu_model
from skimage.transform import resize
from unet_pipeline.inference.overlap_tile import TilePredictor
from unet_pipeline.metrics.scores import THRESHOLDS, validation_scores
from unet_pipeline.models.unet import load_model
from unet_pipeline.transforms.cells import cells_of

VALIDATION, TEST = range(20, 25), range(25, 30)


def predictor_of(model_path: Path) -> TilePredictor:
    model, metadata = load_model(model_path)
    tta = bool((metadata["training"].get("tta") or {}).get("chosen", True))  # prediction.tta: auto
    geometry, size, norm = model.config.geometry, metadata["input_size"], metadata["normalisation"]
    return TilePredictor(model, geometry, size, norm, torch.device("cpu"), tta=tta)


def resampled(predictor: TilePredictor, section: np.ndarray, scale: float) -> np.ndarray:
    """Probabilities of a (y, x) uint8 section whose pixels are ``scale`` times smaller than the model's."""
    shape = tuple(round(side / scale) for side in section.shape)
    small = resize(section, shape, order=1, anti_aliasing=True, preserve_range=True)
    probability = predictor.section(np.rint(np.clip(small, 0, 255)).astype(np.uint8))
    return resize(probability, section.shape, order=1, anti_aliasing=False).astype(np.float32)


def scored(probabilities: dict, labels: np.ndarray) -> str:
    """V_rand on TEST at the threshold chosen on VALIDATION (mean over sections), and TEST's best."""
    v_rand = {
        z: [validation_scores(p, cells_of(labels[z] > 0), t)["v_rand"] for t in THRESHOLDS]
        for z, p in probabilities.items()
    }
    validation = np.nanmean([v_rand[z] for z in VALIDATION], axis=0)
    test = np.nanmean([v_rand[z] for z in TEST], axis=0)
    chosen = int(np.argmax(validation))
    return f"{validation[chosen]:.4f} ({THRESHOLDS[chosen]}) | {test[chosen]:.4f} | {test.max():.4f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, default=ISBI_DATA)
    parser.add_argument("--proxies", nargs="+", choices=sorted(fine_tuning.PIXEL_SCALE), default=["harder", "zoomed"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    predictor = predictor_of(args.model)
    image = tifffile.imread(args.data / "train-volume.tif")
    labels = tifffile.imread(args.data / "train-labels.tif")
    print(f"{cpu_model()}; {args.model}, TTA {'on' if predictor.tta else 'off'}")
    print("| proxy | prediction | validation V_rand (threshold) | held-out V_rand | held-out best | s/section |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in args.proxies:
        stack_image, stack_labels = fine_tuning.PROXIES[name](image, labels)
        scale = fine_tuning.PIXEL_SCALE[name]
        ways = {"as it is": predictor.section, "resampled": functools.partial(resampled, predictor, scale=scale)}
        for way, predict in ways.items():
            start = time.perf_counter()
            probabilities = {z: predict(stack_image[z]) for z in (*VALIDATION, *TEST)}
            seconds = (time.perf_counter() - start) / len(probabilities)
            print(f"| {name} (x{scale}) | {way} | {scored(probabilities, stack_labels)} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
