"""The augmented training set: geometry, alignment, value ranges, determinism."""

import copy

import numpy as np
import pytest
import tifffile
from scipy import ndimage
from unet_pipeline.core.defaults import schema_defaults
from unet_pipeline.core.errors import InputDataError, PipelineError
from unet_pipeline.data import volume_store
from unet_pipeline.data.mirror import mirror_indices
from unet_pipeline.models.tile_geometry import TileGeometry
from unet_pipeline.stages.augment import write_augmented_set
from unet_pipeline.stages.ingest import ingest
from unet_pipeline.stages.weight_maps import write_weight_maps
from unet_pipeline.transforms.augmentation import TRANSFER, draw_sample, low_resolution, make_sample

INPUT, OUTPUT = 92, 52  # a 3-level unpadded U-Net
MARGIN = (INPUT - OUTPUT) // 2
OFF = {
    "seed": 0,
    "samples_per_task": 4,
    "shift": {"enabled": False},
    "flip": {"enabled": False},
    "rotation": {"enabled": False, "max_degrees": 180},
    "elastic": {"enabled": False, "grid_points": 3, "sigma": 10.0},
    "intensity": {"enabled": False, "brightness": 0.1, "contrast": 0.2, "gamma": 0.2},
    **{name: schema_defaults(f"augmentation/{name}") for name in TRANSFER},  # off
}


def options(**enabled):
    result = copy.deepcopy(OFF)
    for name, settings in enabled.items():
        result[name].update(settings, enabled=True)
    return result


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (2, 50, 60), dtype=np.uint8)
    labels = (rng.random((2, 50, 60)) < 0.7).astype(np.uint8)
    weights = rng.random((2, 50, 60)).astype(np.float32) + 0.5
    return image, labels, weights


def mirrored_crop(section, top, left, size):
    """``size`` x ``size`` crop at (top, left) of ``np.pad(section, mode="reflect")``, any offset."""
    pad = 3 * size
    padded = np.pad(section, pad, mode="reflect")
    return padded[top + pad : top + pad + size, left + pad : left + pad + size]


def test_mirror_indices_match_numpy_reflect_padding():
    row = np.arange(7)
    indices = np.arange(-20, 27)
    np.testing.assert_array_equal(row[mirror_indices(indices, 7)], np.pad(row, 20, mode="reflect")[:47])


@pytest.mark.parametrize("settings", [options(), options(elastic={"sigma": 0.0})])
def test_no_augmentation_reproduces_the_mirrored_crop(arrays, settings):
    image, labels, weights = arrays
    params = draw_sample(np.random.default_rng(0), settings, [1], image.shape[1:], OUTPUT)
    top, left = params["origin"]
    assert (top, left) == ((50 - OUTPUT) // 2, (60 - OUTPUT) // 2), "without shift the tile is centred"
    tile, label_tile, weight_tile = make_sample(image, labels, weights, params, INPUT, OUTPUT)
    np.testing.assert_array_equal(tile, mirrored_crop(image[1], top - MARGIN, left - MARGIN, INPUT))
    np.testing.assert_array_equal(label_tile, mirrored_crop(labels[1], top, left, OUTPUT))
    np.testing.assert_array_equal(weight_tile, mirrored_crop(weights[1], top, left, OUTPUT))


def test_gray_value_augmentation(arrays):
    """Gamma, then contrast about mid-gray, then brightness; labels and weights untouched; draws within bounds."""
    image, labels, weights = arrays
    settings = options(intensity={"gamma": 0.2, "contrast": 0.2, "brightness": 0.1})
    draws = [draw_sample(np.random.default_rng(seed), settings, [1], image.shape[1:], OUTPUT) for seed in range(200)]
    gammas, contrasts, brightnesses = (np.array([d[key] for d in draws]) for key in ("gamma", "contrast", "brightness"))
    assert np.exp(-0.2) <= gammas.min() < 0.9 and 1.1 < gammas.max() <= np.exp(0.2)
    assert 0.8 <= contrasts.min() < 0.85 and 1.15 < contrasts.max() <= 1.2
    assert -0.1 <= brightnesses.min() < -0.08 and 0.08 < brightnesses.max() <= 0.1
    params = {**draws[0], "gamma": 0.5, "contrast": 1.5, "brightness": -0.1}
    tile, label_tile, weight_tile = make_sample(image, labels, weights, params, INPUT, OUTPUT)
    top, left = params["origin"]
    crop = mirrored_crop(image[1], top - MARGIN, left - MARGIN, INPUT) / 255.0
    expected = np.clip(np.rint(((np.sqrt(crop) - 0.5) * 1.5 + 0.5 - 0.1) * 255), 0, 255)
    np.testing.assert_array_equal(tile, expected.astype(np.uint8))
    assert tile.min() == 0 and tile.max() == 255, "values beyond the range are clipped"
    np.testing.assert_array_equal(label_tile, mirrored_crop(labels[1], top, left, OUTPUT))
    np.testing.assert_array_equal(weight_tile, mirrored_crop(weights[1], top, left, OUTPUT))


def test_quarter_turn_and_flips_are_exact(arrays):
    image, labels, weights = arrays
    params = draw_sample(np.random.default_rng(0), options(), [0], image.shape[1:], OUTPUT)
    plain = make_sample(image, labels, weights, params, INPUT, OUTPUT)
    turned = make_sample(image, labels, weights, {**params, "angle": 90.0}, INPUT, OUTPUT)
    flipped = make_sample(image, labels, weights, {**params, "flip": [True, False]}, INPUT, OUTPUT)
    for before, after, mirrored in zip(plain, turned, flipped):
        np.testing.assert_array_equal(after, np.rot90(before, k=-1))
        np.testing.assert_array_equal(mirrored, before[::-1])


@pytest.mark.parametrize("scale", [None, 0.7, 1.4])
def test_deformed_pattern_keeps_labels_aligned_with_the_image(scale):
    rng = np.random.default_rng(3)
    blobs = ndimage.gaussian_filter(rng.random((1, 160, 160)), sigma=(0, 6, 6))
    image = np.where(blobs > np.median(blobs), 230, 20).astype(np.uint8)
    image = np.rint(ndimage.gaussian_filter(image.astype(float), sigma=(0, 1.5, 1.5))).astype(np.uint8)
    labels = (image > 125).astype(np.uint8)
    weights = np.ones(image.shape, np.float32)
    settings = options(shift={}, flip={}, rotation={}, elastic={"sigma": 10.0})
    for seed in range(5):
        params = draw_sample(np.random.default_rng(seed), settings, [0], image.shape[1:], OUTPUT)
        assert np.abs(params["displacements"]).max() > 3, "the test must deform"
        if scale is not None:
            params["scale"] = scale
        tile, label_tile, _ = make_sample(image, labels, weights, params, INPUT, OUTPUT)
        inner = tile[MARGIN : MARGIN + OUTPUT, MARGIN : MARGIN + OUTPUT]
        mismatch = label_tile != (inner > 125)
        edges = ndimage.binary_dilation(ndimage.morphological_gradient(label_tile, size=3) > 0)
        assert not (mismatch & ~edges).any(), "labels may differ from the image only in a thin band at edges"
        assert mismatch.mean() < 0.03


def test_transfer_augmentations_that_are_off_draw_nothing(arrays):
    """A set made without the augmentations for transfer is the one made before they existed: the same draws,
    whether the settings are left out (an older caller) or off; turned on, they draw after every other draw."""
    image = arrays[0]
    everything = options(shift={}, flip={}, rotation={}, elastic={}, intensity={})
    older = {key: value for key, value in everything.items() if key not in TRANSFER}
    transfer = options(shift={}, flip={}, rotation={}, elastic={}, intensity={}, **{name: {} for name in TRANSFER})
    for seed in range(20):
        draws = [
            draw_sample(np.random.default_rng(seed), s, [0, 1], image.shape[1:], OUTPUT) for s in (older, everything)
        ]
        np.testing.assert_equal(draws[0], draws[1])
        assert not set(draws[0]) & {*TRANSFER, "noise_seed"}
        more = draw_sample(np.random.default_rng(seed), transfer, [0, 1], image.shape[1:], OUTPUT)
        np.testing.assert_equal({key: more[key] for key in draws[0]}, draws[0])
    counts = {name: 0 for name in TRANSFER}
    for seed in range(400):
        drawn = draw_sample(np.random.default_rng(seed), transfer, [0, 1], image.shape[1:], OUTPUT)
        for name in TRANSFER:
            if name in drawn:
                counts[name] += 1
                low, high = transfer[name]["range"]
                assert low <= drawn[name] <= high
    for name in TRANSFER:  # each applies to about its probability's share of the samples
        assert abs(counts[name] / 400 - transfer[name]["probability"]) < 0.06, (name, counts)


def test_scale_magnifies_image_labels_and_weights_about_the_centre():
    """A ramp along x read at scale s rises by 1/s per tile pixel, and labels and weights follow the image."""
    xs = np.broadcast_to(np.arange(256, dtype=np.float64), (1, 256, 256))
    image, labels = xs.astype(np.uint8), (xs % 32 < 16).astype(np.uint8)
    params = draw_sample(np.random.default_rng(0), options(), [0], (256, 256), OUTPUT)
    for scale in (0.7, 1.0, 1.4):
        tile, label_tile, weight_tile = make_sample(
            image, labels, xs.astype(np.float32), {**params, "scale": scale}, INPUT, OUTPUT
        )
        centre = 127.5 + (np.arange(INPUT) - (INPUT - 1) / 2) / scale
        np.testing.assert_allclose(tile[0], centre, atol=0.51)
        inner = centre[MARGIN : MARGIN + OUTPUT]
        np.testing.assert_allclose(weight_tile[0], inner, atol=1e-3)
        sharp = np.abs((inner + 8) % 16 - 8) > 1  # more than a pixel from a stripe's edge
        np.testing.assert_array_equal(label_tile[0][sharp], (inner % 32 < 16)[sharp])


def test_noise_blur_and_low_resolution_change_the_input_tile_only(arrays):
    image, labels, weights = arrays
    params = draw_sample(np.random.default_rng(0), options(), [1], image.shape[1:], OUTPUT)
    plain = make_sample(image, labels, weights, params, INPUT, OUTPUT)
    values = plain[0] / 255.0
    blurred = make_sample(image, labels, weights, {**params, "blur": 1.0}, INPUT, OUTPUT)
    expected = np.clip(np.rint(ndimage.gaussian_filter(values, 1.0, mode="reflect") * 255), 0, 255)
    np.testing.assert_array_equal(blurred[0], expected)
    noisy = make_sample(image, labels, weights, {**params, "noise": 0.09, "noise_seed": 5}, INPUT, OUTPUT)
    again = make_sample(image, labels, weights, {**params, "noise": 0.09, "noise_seed": 5}, INPUT, OUTPUT)
    np.testing.assert_array_equal(noisy[0], again[0])
    added = noisy[0].astype(float) - plain[0]
    assert abs(added.std() / (0.3 * plain[0].std()) - 1) < 0.15, "noise of 0.3 x the tile's std (clipped at 0, 255)"
    lower = make_sample(image, labels, weights, {**params, "low_resolution": 1.0}, INPUT, OUTPUT)
    np.testing.assert_array_equal(lower[0], plain[0])
    for changed in (blurred, noisy):
        for before, after in zip(plain[1:], changed[1:]):
            np.testing.assert_array_equal(after, before)


def test_low_resolution_keeps_every_other_pixel_then_interpolates():
    stripes = np.tile(np.array([0.0, 0.8]), (6, 3))  # columns alternate; nearest at half resolution picks the 0.8s
    np.testing.assert_allclose(low_resolution(stripes, 0.5), np.full((6, 6), 0.8), atol=1e-12)
    ramp = np.add.outer(np.arange(32.0), np.arange(32.0)) / 64
    coarse = low_resolution(ramp, 0.5)
    assert coarse.shape == (32, 32)
    kept = np.ix_(np.arange(1, 32, 2), np.arange(1, 32, 2))  # the kept pixels stay where they were
    np.testing.assert_allclose(coarse[kept], ramp[kept], atol=1e-12)
    np.testing.assert_allclose(coarse[6:-6, 6:-6], ramp[6:-6, 6:-6], atol=1e-3)  # no shift, away from the ends


@pytest.mark.parametrize(("name", "bounds"), [("blur", [1.0, 0.5]), ("scale", [0.0, 1.4]), ("noise", [0.2, 0.1])])
def test_an_empty_transfer_range_is_refused_before_anything_is_written(name, bounds, tiny_training, tmp_path):
    settings = all_on(2, 1)
    settings[name] = {"enabled": True, "probability": 0.5, "range": bounds}
    with pytest.raises(PipelineError, match=rf"augmentation\.{name}\.range"):
        write_augmented_set(
            tiny_training / "volume.zarr",
            tiny_training / "weights.zarr",
            tmp_path / "a.zarr",
            settings,
            TileGeometry(levels=3, padded=False),
            INPUT,
        )
    assert not (tmp_path / "a.zarr").exists()


@pytest.fixture(scope="module")
def tiny_training(tiny_isbi, tmp_path_factory):
    folder = tmp_path_factory.mktemp("augment")
    config = {
        "image": {"source": "train-volume.tif"},
        "labels": {"source": "train-labels.tif"},
        "sections": {"train": "0-1", "validation": "2"},
    }
    ingest("tiny", config, tiny_isbi / "train-volume.tif", tiny_isbi / "train-labels.tif", folder / "volume.zarr")
    write_weight_maps(folder / "volume.zarr", folder / "weights.zarr")
    return folder


def all_on(samples, per_task):
    settings = options(shift={}, flip={}, rotation={}, elastic={}, intensity={})
    settings.update(samples=samples, samples_per_task=per_task, seed=7)
    return settings


def test_augmented_set_is_deterministic_and_well_formed(tiny_training, tmp_path):
    volume, weights = tiny_training / "volume.zarr", tiny_training / "weights.zarr"
    geometry = TileGeometry(levels=3, padded=False)
    serial = write_augmented_set(
        volume, weights, tmp_path / "a.zarr", all_on(9, 4), geometry, INPUT, workers=1, progress=False
    )
    write_augmented_set(volume, weights, tmp_path / "b.zarr", all_on(9, 2), geometry, INPUT, workers=2, progress=False)
    a, b = volume_store.open_store(tmp_path / "a.zarr"), volume_store.open_store(tmp_path / "b.zarr")
    for name in ("inputs", "labels", "weights", "sections"):
        np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)
    assert a["inputs"].shape == (9, INPUT, INPUT) and a["inputs"].dtype == np.uint8
    assert a["labels"].shape == (9, OUTPUT, OUTPUT) and a["inputs"].chunks == (1, INPUT, INPUT)
    assert set(np.unique(a["labels"][:])) == {0, 1}
    assert np.isfinite(a["weights"][:]).all() and a["weights"][:].min() > 0
    assert set(a["sections"][:]) <= {0, 1}, "only training sections are sampled"
    assert len({a["inputs"][i].tobytes() for i in range(9)}) == 9
    source = volume_store.provenance(volume_store.open_store(volume))
    assert serial["seed"] == 7 and serial["output_size"] == OUTPUT and serial["margin"] == MARGIN
    assert serial["source"]["image_pixel_sha256"] == source["image"]["pixel_sha256"]
    assert serial["augmentation"]["elastic"] == {"enabled": True, "grid_points": 3, "sigma": 10.0}
    other_seed = write_augmented_set(
        volume, weights, tmp_path / "c.zarr", {**all_on(2, 2), "seed": 8}, geometry, INPUT, progress=False
    )
    assert other_seed["seed"] == 8
    assert not np.array_equal(volume_store.open_store(tmp_path / "c.zarr")["inputs"][0], a["inputs"][0])


def test_refuses_data_without_training_sections_or_with_foreign_weights(tiny_training, tiny_isbi, tmp_path):
    config = {"image": {"source": "x"}, "labels": {"source": "y"}, "sections": {"validation": "0-2"}}
    ingest("novalid", config, tiny_isbi / "train-volume.tif", tiny_isbi / "train-labels.tif", tmp_path / "v.zarr")
    with pytest.raises(InputDataError, match="declares no training sections"):
        write_augmented_set(
            tmp_path / "v.zarr",
            tiny_training / "weights.zarr",
            tmp_path / "a.zarr",
            all_on(2, 1),
            TileGeometry(levels=3, padded=False),
            INPUT,
        )
    config["sections"] = {"train": "0"}
    flipped = tmp_path / "flipped.tif"
    tifffile.imwrite(flipped, tifffile.imread(tiny_isbi / "train-labels.tif")[:, ::-1].copy(), photometric="minisblack")
    ingest("other", config, tiny_isbi / "test-volume.tif", flipped, tmp_path / "x.zarr")
    with pytest.raises(InputDataError, match="computed from other labels"):
        write_augmented_set(
            tmp_path / "x.zarr",
            tiny_training / "weights.zarr",
            tmp_path / "a.zarr",
            all_on(2, 1),
            TileGeometry(levels=3, padded=False),
            INPUT,
        )
    assert not (tmp_path / "a.zarr").exists()
