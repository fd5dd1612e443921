"""Per-volume normalisation: percentiles, the mean and std they amount to, and prediction with them."""

import numpy as np
import pytest
import zarr
from unet_pipeline.core.errors import PipelineError
from unet_pipeline.inference.overlap_tile import normalise
from unet_pipeline.transforms.normalisation import (
    class_means,
    for_new_stack,
    for_volume,
    histogram,
    percentiles,
    sample_histogram,
    statistics,
)


def test_percentiles_of_a_histogram():
    values = np.arange(100, dtype=np.uint8)  # 0..99, one pixel each
    counts = histogram([values.reshape(10, 10)])
    assert counts.sum() == 100 and counts[:100].tolist() == [1] * 100
    assert percentiles(counts, (1.0, 99.0)) == [0.0, 98.0]
    assert percentiles(counts, (50.0,)) == [49.0]


def test_a_volume_with_another_contrast_reaches_the_network_as_the_training_data_did():
    rng = np.random.default_rng(0)
    training = rng.normal(120, 30, (4, 64, 64)).clip(0, 255).astype(np.uint8)
    darker = (40 + 0.5 * training.astype(np.float64)).round().astype(np.uint8)  # offset and half the contrast
    stats = {"mean": training.mean() / 255, "std": training.std() / 255}
    stats["percentiles"] = percentiles(histogram(training))
    fitted = for_volume(stats, percentiles(histogram(darker)))
    seen, expected = normalise(darker, fitted), normalise(training, stats)
    assert abs(seen.mean() - expected.mean()) < 0.05 and abs(seen.std() / expected.std() - 1) < 0.05
    assert np.abs(seen - expected).max() < 0.1, "each pixel lands where its training twin did, to rounding"
    untouched = for_volume(stats, stats["percentiles"])
    assert untouched == pytest.approx({"mean": stats["mean"], "std": stats["std"]})
    with pytest.raises(PipelineError, match="records no gray-value percentiles"):
        for_volume({"mean": 0.5, "std": 0.2}, [10.0, 200.0])


def test_the_sample_reads_windows_of_a_few_sections(tmp_path):
    image = zarr.create_array(str(tmp_path / "i.zarr"), shape=(40, 300, 200), chunks=(1, 100, 100), dtype="uint8")
    image[:] = 7
    image[0] = 250  # the first section is in the sample (sections spread from first to last)
    counts = sample_histogram(image, sections=4, window=50)
    assert counts.sum() == 4 * 50 * 50 and counts[250] == 50 * 50 and counts[7] == 3 * 50 * 50


def stack_and_labels(rng, low, high):
    """Cells (label 1) of gray value ``high`` among membranes (label 0) of ``low``, with noise."""
    labels = rng.random((3, 48, 48)) > 0.3
    image = np.where(labels, high, low) + rng.normal(0, 8, labels.shape)
    return image.clip(0, 255).astype(np.uint8), labels.astype(np.uint8)


def fitted_run(image, labels) -> dict:
    return statistics(histogram(image)) | {"class_means": class_means(image, labels)}


def test_class_means_average_each_label_and_leave_a_missing_class_out():
    image = np.array([[10, 20], [200, 210]], np.uint8)
    labels = np.array([[0, 0], [1, 7]], np.uint8)  # any label above 0 is foreground (instances too)
    assert class_means([image], [labels]) == pytest.approx([15 / 255, 205 / 255])
    assert class_means([image], [np.zeros_like(labels)]) == [pytest.approx(110 / 255), None]
    with pytest.raises(ValueError):
        class_means([image, image], [labels])


def test_a_fine_tuned_stack_reaches_the_network_as_the_starting_stack_did_even_inverted():
    rng = np.random.default_rng(1)
    start = fitted_run(*stack_and_labels(rng, 60, 180))
    inverted_image, labels = stack_and_labels(rng, 230, 90)  # membranes bright: another contrast, inverted
    fitted = for_new_stack(start, fitted_run(inverted_image, labels))
    assert fitted["std"] < 0, "an inverted stack is turned back the right way round"
    for k in (0, 1):  # each class mean lands where the starting model saw its own
        new_mean = fitted["class_means"][k]
        assert (new_mean - fitted["mean"]) / fitted["std"] == pytest.approx(
            (start["class_means"][k] - start["mean"]) / start["std"]
        )
    assert fitted["percentiles"] == percentiles(histogram(inverted_image)), "per-volume normalisation: the new stack's"
    seen = normalise(inverted_image, fitted)
    assert seen[labels == 1].mean() > seen[labels == 0].mean(), "cells brighter than membranes, as in training"


def test_without_two_class_means_a_fine_tuned_stack_gets_its_own_statistics():
    rng = np.random.default_rng(2)
    image, labels = stack_and_labels(rng, 60, 180)
    new = fitted_run(image, labels)
    old_model = {"mean": 0.4, "std": 0.2, "percentiles": [10.0, 240.0]}  # trained before class means were recorded
    assert for_new_stack(old_model, new) == new
    one_class = new | {"class_means": class_means(image, np.ones_like(labels))}
    assert for_new_stack(fitted_run(image, labels), one_class) == one_class
