"""Per-volume normalisation: percentiles, the mean and std they amount to, and prediction with them."""

import numpy as np
import pytest
import zarr
from unet_pipeline.core.errors import PipelineError
from unet_pipeline.inference.overlap_tile import normalise
from unet_pipeline.transforms.normalisation import for_volume, histogram, percentiles, sample_histogram


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
