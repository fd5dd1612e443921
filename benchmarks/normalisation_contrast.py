"""Per-volume normalisation against the training set's, on the ISBI validation sections with changed contrast.

    python benchmarks/normalisation_contrast.py [--model results/isbi2012/models/laptop/model.pt]
                                                [--data DIR] [--sections 20-24]

The validation sections (20-24, which training only used to pick its checkpoint) are
altered as a microscope or another lab would alter them: gray values x in [0, 1]
become x^0.5 (gamma 0.5, brighter), x^2 (gamma 2, darker), or mean + 0.5 (x - mean)
(contrast x0.5). Each variant is ingested as a volume store and predicted through
``predict_volume`` (what the predict rule runs) with ``normalisation: training`` and
``volume``; printed per variant and mode: V_rand and the misclassified fraction at
threshold 0.5, the scores training validates with (``metrics.validation_scores``),
averaged over the sections, with the CPU. A model trained before the training
percentiles were recorded gets them from the training sections 0-19 first (what
training now records), noted in the output.
"""

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
from shipped_workflow import ISBI_DATA, cpu_model
from unet_pipeline.data import volume_store
from unet_pipeline.data.sources import parse_sections
from unet_pipeline.metrics import validation_scores
from unet_pipeline.stages.ingest import ingest
from unet_pipeline.stages.predict import predict_volume
from unet_pipeline.transforms.cells import cells_of
from unet_pipeline.transforms.normalisation import histogram, percentiles

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "original": lambda x: x,
    "gamma 0.5": lambda x: x**0.5,
    "gamma 2": lambda x: x**2,
    "contrast x0.5": lambda x: x.mean() + 0.5 * (x - x.mean()),
}


def model_with_percentiles(model: Path, image: np.ndarray, folder: Path) -> Path:
    """The model itself, or a copy with its training sections' percentiles when it lacks them."""
    saved = torch.load(model, weights_only=True)
    if "percentiles" in saved["metadata"]["normalisation"]:
        return model
    robust = percentiles(histogram(image[:20]))
    print(f"{model} records no training percentiles: added those of sections 0-19, {robust}")
    saved["metadata"]["normalisation"]["percentiles"] = robust
    copy = folder / "model.pt"
    torch.save(saved, copy)
    return copy


def score(prediction: Path, labels: np.ndarray) -> dict:
    probabilities = volume_store.open_store(prediction)[volume_store.IMAGE_PATH]
    scores = [
        validation_scores(volume_store.decode_probability(probabilities[z]), cells_of(labels[z], "binary"))
        for z in range(labels.shape[0])
    ]
    return {name: float(np.nanmean([s[name] for s in scores])) for name in ("v_rand", "misclassified")}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO / "results" / "isbi2012" / "models" / "laptop" / "model.pt")
    parser.add_argument("--data", type=Path, default=ISBI_DATA)
    parser.add_argument("--sections", default="20-24")
    args = parser.parse_args()
    image = tifffile.imread(args.data / "train-volume.tif")
    labels = (tifffile.imread(args.data / "train-labels.tif") == 255).astype(np.uint8)
    picked = parse_sections(args.sections, image.shape[0])
    folder = Path(tempfile.mkdtemp(prefix="normalisation_"))
    print(f"{cpu_model()}; sections {args.sections}; model {args.model}")
    try:
        model = model_with_percentiles(args.model, image, folder)
        print(f"{'variant':14s} {'normalisation':13s} {'V_rand':>8s} {'misclassified':>14s} {'seconds':>8s}")
        for name, change in VARIANTS.items():
            altered = np.clip(np.rint(change(image[picked] / 255.0) * 255.0), 0, 255).astype(np.uint8)
            tifffile.imwrite(folder / "image.tif", altered, photometric="minisblack")
            tifffile.imwrite(folder / "labels.tif", labels[picked] * 255, photometric="minisblack")
            config = {"image": {"source": "i"}, "labels": {"source": "l"}, "voxel_size": [50, 4, 4]}
            store = folder / f"{name}.zarr"
            ingest(name, config | {"sections": {"test": "all"}}, folder / "image.tif", folder / "labels.tif", store)
            for mode in ("training", "volume"):
                out = folder / f"{name}-{mode}.zarr"
                start = time.perf_counter()
                predict_volume(model, store, out, normalisation=mode, threads=torch.get_num_threads())
                result = score(out, labels[picked])
                print(
                    f"{name:14s} {mode:13s} {result['v_rand']:8.4f} {result['misclassified']:14.4f} "
                    f"{time.perf_counter() - start:8.1f}",
                    flush=True,
                )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
