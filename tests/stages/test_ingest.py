"""Ingest of TIFF stacks, image folders, Zarr arrays and HDF5 datasets into the OME-Zarr volume store."""

import hashlib
import shutil

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import zarr
from helpers import ISBI_PIXEL_SHA256
from unet_pipeline.core.errors import InputDataError, PipelineError
from unet_pipeline.data import volume_store
from unet_pipeline.data.readers import MemoryLimit
from unet_pipeline.stages.ingest import ingest


def dataset(image, labels=None, **extra):
    config = {"image": {"source": str(image)}, "voxel_size": [50.0, 4.0, 4.0], "unit": "nanometer"}
    if labels is not None:
        config["labels"] = {"source": str(labels), "foreground": 255, "background": 0}
    config.update(extra)
    return config


def only_output_or_nothing(folder, expected):
    """The output folder holds exactly ``expected`` (no temporary stores)."""
    assert sorted(p.name for p in folder.iterdir()) == sorted(expected)


def test_isbi_tiff_stacks_keep_their_pixels(isbi_dir, tmp_path):
    config = dataset(
        isbi_dir / "train-volume.tif", isbi_dir / "train-labels.tif", sections={"train": "0-24", "validation": "25-29"}
    )
    config["image"]["pixel_sha256"] = ISBI_PIXEL_SHA256["train-volume.tif"]
    config["labels"]["pixel_sha256"] = ISBI_PIXEL_SHA256["train-labels.tif"]
    out = tmp_path / "volume.zarr"
    attrs = ingest("isbi2012", config, config["image"]["source"], config["labels"]["source"], out)

    root = volume_store.open_store(out)
    image = root[volume_store.IMAGE_PATH]
    labels = root[volume_store.LABELS_PATH]
    assert image.shape == (30, 512, 512) and image.dtype == np.uint8 and image.chunks == (1, 512, 512)
    np.testing.assert_array_equal(image[:], tifffile.imread(isbi_dir / "train-volume.tif"))
    np.testing.assert_array_equal(labels[:], tifffile.imread(isbi_dir / "train-labels.tif") == 255)
    assert attrs == volume_store.provenance(root)
    assert attrs["image"]["pixel_sha256"] == ISBI_PIXEL_SHA256["train-volume.tif"]
    assert attrs["sections"] == {"train": list(range(25)), "validation": list(range(25, 30)), "test": []}
    ome = root.attrs["ome"]
    assert ome["version"] == "0.5"
    assert ome["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == [50.0, 4.0, 4.0]
    assert root["labels"].attrs["ome"]["labels"] == ["cells"]
    only_output_or_nothing(tmp_path, ["volume.zarr"])


def test_png_folders_with_inverted_polarity(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (3, 40, 50), dtype=np.uint8)
    membrane = rng.random((3, 40, 50)) < 0.3
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    for z in range(3):  # names sort naturally: 2 before 10
        iio.imwrite(tmp_path / "img" / f"s{[2, 10, 11][z]}.png", image[z])
        iio.imwrite(tmp_path / "lab" / f"s{[2, 10, 11][z]}.png", np.where(membrane[z], 255, 0).astype(np.uint8))
    config = dataset(tmp_path / "img", tmp_path / "lab")
    config["labels"].update(foreground=0, background=255)  # membranes drawn white
    out = tmp_path / "out" / "volume.zarr"
    ingest("pngs", config, tmp_path / "img", tmp_path / "lab", out)
    root = volume_store.open_store(out)
    np.testing.assert_array_equal(root[volume_store.IMAGE_PATH][:], image)
    np.testing.assert_array_equal(root[volume_store.LABELS_PATH][:], ~membrane)


def test_zarr_sources_2d_3d_and_group_key(tmp_path):
    data = np.arange(2 * 30 * 20, dtype=np.uint16).reshape(2, 30, 20) % 256
    zarr.create_array(str(tmp_path / "plain.zarr"), data=data)
    group = zarr.open_group(str(tmp_path / "group.zarr"), mode="w")
    group.create_array("raw", data=data)
    group.create_array("other", data=data[0])
    for source, key in [(tmp_path / "plain.zarr", None), (tmp_path / "group.zarr", "raw")]:
        out = tmp_path / f"out-{source.stem}.zarr"
        config = dataset(source)
        config["image"]["key"] = key
        attrs = ingest("z", config, source, None, out)
        np.testing.assert_array_equal(volume_store.open_store(out)[volume_store.IMAGE_PATH][:], data)
        assert attrs["image"]["dtype"] == "uint16" and attrs["labels"] is None
    with pytest.raises(InputDataError, match=r"group\.zarr: Zarr group holds arrays \['other', 'raw'\]"):
        ingest("z", dataset(tmp_path / "group.zarr"), tmp_path / "group.zarr", None, tmp_path / "bad.zarr")
    single = tmp_path / "single.zarr"
    zarr.create_array(str(single), data=data[1])
    out = tmp_path / "out-single.zarr"
    ingest("z", dataset(single), single, None, out)
    assert volume_store.open_store(out)[volume_store.IMAGE_PATH].shape == (1, 30, 20)


def test_sixteen_bit_needs_rescale(tmp_path):
    data = np.linspace(0, 4095, 2 * 16 * 16).reshape(2, 16, 16).astype(np.uint16)
    tifffile.imwrite(tmp_path / "deep.tif", data)
    out = tmp_path / "volume.zarr"
    with pytest.raises(
        InputDataError, match=r"deep\.tif, section 0: values 0\.\.\d+ of dtype uint16 do not fit uint8.*rescale"
    ):
        ingest("d", dataset(tmp_path / "deep.tif"), tmp_path / "deep.tif", None, out)
    only_output_or_nothing(tmp_path, ["deep.tif"])
    config = dataset(tmp_path / "deep.tif")
    config["image"]["rescale"] = [100, 4000]
    ingest("d", config, tmp_path / "deep.tif", None, out)
    image = volume_store.open_store(out)[volume_store.IMAGE_PATH][:]
    # low -> 0, high -> 255, linear between, rounded to the nearest integer (halves to even), clipped outside
    expected = np.clip(np.rint((data.astype(np.float64) - 100) * 255 / 3900), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(image, expected)
    assert image[0, 0, 0] == 0 and image[1, -1, -1] == 255 and (data[image == 128] >= 2044).all()


@pytest.mark.parametrize("rescale", [[5, 5], [10, 2]])
def test_a_rescale_without_a_range_is_a_clear_error(tmp_path, rescale):
    tifffile.imwrite(tmp_path / "deep.tif", np.zeros((2, 8, 8), np.uint16))
    config = dataset(tmp_path / "deep.tif")
    config["image"]["rescale"] = rescale
    with pytest.raises(InputDataError, match=r"d: image .*deep\.tif: rescale \[\d+, \d+\] must have low < high"):
        ingest("d", config, tmp_path / "deep.tif", None, tmp_path / "volume.zarr")
    only_output_or_nothing(tmp_path, ["deep.tif"])


def test_a_missing_voxel_size_is_logged_and_not_invented(tmp_path, caplog):
    tifffile.imwrite(tmp_path / "img.tif", np.zeros((2, 8, 8), np.uint8))
    config = dataset(tmp_path / "img.tif")
    del config["voxel_size"]
    with caplog.at_level("WARNING"):
        attrs = ingest("d", config, tmp_path / "img.tif", None, tmp_path / "volume.zarr")
    assert "d: no voxel_size in the config" in caplog.text
    assert attrs["voxel_size"] is None and attrs["unit"] is None
    axes = volume_store.open_store(tmp_path / "volume.zarr").attrs["ome"]["multiscales"][0]["axes"]
    assert axes == [{"name": name, "type": "space"} for name in "zyx"], "no unit where none is known"


def test_float_image_with_fractions_is_refused(tmp_path):
    tifffile.imwrite(tmp_path / "f.tif", np.full((2, 8, 8), 0.5, dtype=np.float32))
    with pytest.raises(InputDataError, match="float32 do not fit uint8"):
        ingest("f", dataset(tmp_path / "f.tif"), tmp_path / "f.tif", None, tmp_path / "v.zarr")


def test_instance_labels_keep_ids(tmp_path):
    ids = np.zeros((2, 20, 20), dtype=np.uint16)
    ids[:, 2:8, 2:8], ids[:, 10:18, 10:18] = 7, 300
    tifffile.imwrite(tmp_path / "img.tif", np.zeros((2, 20, 20), np.uint8))
    tifffile.imwrite(tmp_path / "ids.tif", ids)
    config = dataset(tmp_path / "img.tif", tmp_path / "ids.tif")
    config["labels"]["type"] = "instance"
    attrs = ingest("i", config, tmp_path / "img.tif", tmp_path / "ids.tif", tmp_path / "v.zarr")
    labels = volume_store.open_store(tmp_path / "v.zarr")[volume_store.LABELS_PATH]
    assert labels.dtype == np.uint32 and attrs["labels"]["type"] == "instance"
    np.testing.assert_array_equal(labels[:], ids)


@pytest.fixture
def small_pair(tmp_path):
    tifffile.imwrite(tmp_path / "img.tif", np.zeros((3, 16, 16), np.uint8), photometric="minisblack")
    labels = np.full((3, 16, 16), 255, np.uint8)
    labels[:, 8] = 0
    tifffile.imwrite(tmp_path / "lab.tif", labels, photometric="minisblack")
    return tmp_path / "img.tif", tmp_path / "lab.tif"


def test_non_binary_labels_are_refused(small_pair, tmp_path):
    image, labels = small_pair
    data = tifffile.imread(labels)
    data[1, 0, 0] = 128
    tifffile.imwrite(labels, data, photometric="minisblack")
    with pytest.raises(
        InputDataError,
        match=r"lab\.tif, section 1: label values \[128\] are neither foreground \(255\) nor background \(0\)",
    ):
        ingest("b", dataset(image, labels), image, labels, tmp_path / "v.zarr")
    only_output_or_nothing(tmp_path, ["img.tif", "lab.tif"])


def test_shape_mismatch_is_refused(small_pair, tmp_path):
    image, _ = small_pair
    tifffile.imwrite(tmp_path / "short.tif", np.zeros((2, 16, 16), np.uint8), photometric="minisblack")
    with pytest.raises(
        InputDataError, match=r"short\.tif: label shape \(2, 16, 16\) differs from image shape \(3, 16, 16\)"
    ):
        ingest("s", dataset(image, tmp_path / "short.tif"), image, tmp_path / "short.tif", tmp_path / "v.zarr")


def test_corrupt_and_missing_tiffs(isbi_dir, tmp_path):
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes((isbi_dir / "train-volume.tif").read_bytes()[:3_000_000])
    with pytest.raises(InputDataError, match=r"truncated\.tif: (not a readable TIFF|section \d+ cannot be decoded)"):
        ingest("c", dataset(truncated), truncated, None, tmp_path / "v.zarr")
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(b"this is not a tiff at all" * 10)
    with pytest.raises(InputDataError, match=r"garbage\.tif: not a readable TIFF"):
        ingest("c", dataset(garbage), garbage, None, tmp_path / "v.zarr")
    with pytest.raises(InputDataError, match=r"nowhere\.tif: no such file"):
        ingest("c", dataset(tmp_path / "nowhere.tif"), tmp_path / "nowhere.tif", None, tmp_path / "v.zarr")
    only_output_or_nothing(tmp_path, ["truncated.tif", "garbage.tif"])


def test_gray_saved_with_color_or_alpha_channels_is_read_as_gray(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (4, 20, 30), dtype=np.uint8)
    opaque = np.full((20, 30), 255, np.uint8)
    (tmp_path / "mixed").mkdir()
    iio.imwrite(tmp_path / "mixed" / "s0.png", image[0])  # L
    iio.imwrite(tmp_path / "mixed" / "s1.png", np.dstack([image[1], opaque]))  # LA
    iio.imwrite(tmp_path / "mixed" / "s2.png", np.dstack([image[2]] * 3))  # RGB
    tifffile.imwrite(tmp_path / "mixed" / "s3.tif", np.dstack([image[3]] * 3 + [opaque]), photometric="rgb")  # RGBA
    ingest("mixed", dataset(tmp_path / "mixed"), tmp_path / "mixed", None, tmp_path / "v.zarr")
    np.testing.assert_array_equal(volume_store.open_store(tmp_path / "v.zarr")[volume_store.IMAGE_PATH][:], image)
    tifffile.imwrite(tmp_path / "rgb.tif", np.stack([np.dstack([s] * 3) for s in image]), photometric="rgb")
    ingest("rgb", dataset(tmp_path / "rgb.tif"), tmp_path / "rgb.tif", None, tmp_path / "w.zarr")
    np.testing.assert_array_equal(volume_store.open_store(tmp_path / "w.zarr")[volume_store.IMAGE_PATH][:], image)


def test_color_or_transparent_images_need_a_channel(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    (tmp_path / "color").mkdir()
    iio.imwrite(tmp_path / "color" / "s0.png", rgb)
    with pytest.raises(InputDataError, match=r"s0\.png: the color channels differ.*`channel:`"):
        ingest("c", dataset(tmp_path / "color"), tmp_path / "color", None, tmp_path / "v.zarr")
    config = dataset(tmp_path / "color")
    config["image"]["channel"] = 1
    ingest("c", config, tmp_path / "color", None, tmp_path / "v.zarr")
    np.testing.assert_array_equal(volume_store.open_store(tmp_path / "v.zarr")[volume_store.IMAGE_PATH][0], rgb[..., 1])
    (tmp_path / "transparent").mkdir()
    alpha = np.full((20, 30), 255, np.uint8)
    alpha[0, 0] = 0
    iio.imwrite(tmp_path / "transparent" / "s0.png", np.dstack([rgb[..., 0], alpha]))
    with pytest.raises(InputDataError, match=r"s0\.png: the alpha channel is not fully opaque"):
        ingest("t", dataset(tmp_path / "transparent"), tmp_path / "transparent", None, tmp_path / "t.zarr")
    assert not (tmp_path / "t.zarr").exists()


def test_hdf5_sources_with_and_without_key(tmp_path):
    import h5py

    image = np.random.default_rng(2).integers(0, 256, (3, 16, 24), dtype=np.uint8)
    labels = np.where(image > 100, 255, 0).astype(np.uint8)
    with h5py.File(tmp_path / "isbi.h5", "w") as h5:
        h5["raw"] = image
        h5["labels/membranes"] = labels
    config = dataset(tmp_path / "isbi.h5", tmp_path / "isbi.h5")
    config["image"]["key"], config["labels"]["key"] = "raw", "labels/membranes"
    ingest("h5", config, tmp_path / "isbi.h5", tmp_path / "isbi.h5", tmp_path / "v.zarr")
    root = volume_store.open_store(tmp_path / "v.zarr")
    np.testing.assert_array_equal(root[volume_store.IMAGE_PATH][:], image)
    np.testing.assert_array_equal(root[volume_store.LABELS_PATH][:], labels == 255)
    with pytest.raises(InputDataError, match=r"isbi\.h5: HDF5 file holds datasets \['labels/membranes', 'raw'\]"):
        ingest("h5", dataset(tmp_path / "isbi.h5"), tmp_path / "isbi.h5", None, tmp_path / "w.zarr")
    config["image"]["key"] = "nothing"
    with pytest.raises(InputDataError, match=r"isbi\.h5: no dataset 'nothing'"):
        ingest("h5", config, tmp_path / "isbi.h5", tmp_path / "isbi.h5", tmp_path / "w.zarr")
    (tmp_path / "broken.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(InputDataError, match=r"broken\.h5: not a readable HDF5 file"):
        ingest("b", dataset(tmp_path / "broken.h5"), tmp_path / "broken.h5", None, tmp_path / "w.zarr")
    assert not (tmp_path / "w.zarr").exists()


def test_checksums_and_section_ranges(small_pair, tmp_path):
    image, labels = small_pair
    config = dataset(image, labels)
    config["image"]["pixel_sha256"] = "1" * 64
    with pytest.raises(InputDataError, match=r"img\.tif: pixel sha256 mismatch: expected 1{64}"):
        ingest("k", config, image, labels, tmp_path / "v.zarr")
    config = dataset(image, labels)
    config["labels"]["sha256"] = "2" * 64
    with pytest.raises(PipelineError, match=r"lab\.tif: sha256 mismatch"):
        ingest("k", config, image, labels, tmp_path / "v.zarr")
    with pytest.raises(PipelineError, match=r"sections.train: sections \[3\] are outside"):
        ingest("k", dataset(image, labels, sections={"train": "0-3"}), image, labels, tmp_path / "v.zarr")
    only_output_or_nothing(tmp_path, ["img.tif", "lab.tif"])


def test_a_uint8_zarr_v3_image_is_used_in_place(tmp_path):
    """No copy of a large uint8 (z, y, x) Zarr v3 source: the store links to its chunks, a valid OME-Zarr."""
    from helpers import valid_ome_zarr

    data = np.random.default_rng(1).integers(0, 256, (4, 40, 50), dtype=np.uint8)
    source = tmp_path / "em.zarr"
    zarr.create_array(str(source), data=data, chunks=(1, 20, 25))
    out = tmp_path / "volume.zarr"
    attrs = ingest("em", dataset(source), source, None, out)
    assert (out / "0" / "c").is_symlink() and (out / "0" / "c").resolve() == (source / "c").resolve()
    assert attrs["image"]["linked"] == str(source.resolve()) and attrs["image"]["pixel_sha256"] is None
    np.testing.assert_array_equal(volume_store.open_store(out)[volume_store.IMAGE_PATH][:], data)
    valid_ome_zarr(out)
    assert volume_store.image_id(attrs).startswith(f"linked:{source.resolve()}@")

    shutil.rmtree(out)  # what Snakemake does to an output it reruns: the link goes, the source stays
    np.testing.assert_array_equal(zarr.open_array(str(source))[:], data)

    verified = {"image": {"source": str(source), "pixel_sha256": hashlib.sha256(data.tobytes()).hexdigest()}}
    attrs = ingest("em", verified, source, None, out)
    assert attrs["image"]["pixel_sha256"] == verified["image"]["pixel_sha256"] and (out / "0" / "c").is_symlink()
    wrong = {"image": {"source": str(source), "pixel_sha256": "0" * 64}}
    with pytest.raises(InputDataError, match=r"em\.zarr: pixel sha256 mismatch"):
        ingest("em", wrong, source, None, tmp_path / "wrong.zarr")
    assert not (tmp_path / "wrong.zarr").exists()


def test_zarr_sources_that_need_a_conversion_are_copied(tmp_path):
    data = np.random.default_rng(2).integers(0, 256, (3, 16, 16), dtype=np.uint8)
    cases = {
        "v2.zarr": lambda path: zarr.create_array(str(path), data=data, zarr_format=2),
        "uint16.zarr": lambda path: zarr.create_array(str(path), data=data.astype(np.uint16)),
        "dotted.zarr": lambda path: zarr.create_array(
            str(path), data=data, chunk_key_encoding={"name": "default", "separator": "."}
        ),
        "copy.zarr": lambda path: zarr.create_array(str(path), data=data),
    }
    for name, create in cases.items():
        create(tmp_path / name)
        config = dataset(tmp_path / name)
        config["image"]["link"] = name != "copy.zarr"
        out = tmp_path / f"out-{name}"
        attrs = ingest("z", config, tmp_path / name, None, out)
        assert "linked" not in attrs["image"] and not (out / "0" / "c").is_symlink(), name
        np.testing.assert_array_equal(volume_store.open_store(out)[volume_store.IMAGE_PATH][:], data)


def test_nan_pixels_under_rescale_are_refused_not_made_black(tmp_path):
    data = np.linspace(0, 1, 2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8)
    data[1, 3, 4] = np.nan
    tifffile.imwrite(tmp_path / "float.tif", data)
    config = dataset(tmp_path / "float.tif")
    config["image"]["rescale"] = [0, 1]
    with pytest.raises(InputDataError, match=r"float\.tif, section 1: 1 pixels are NaN or infinite"):
        ingest("d", config, tmp_path / "float.tif", None, tmp_path / "volume.zarr")
    only_output_or_nothing(tmp_path, ["float.tif"])


def png_declaring(path, side: int) -> None:
    """A PNG of a few bytes whose header declares side x side gray pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "failure, message",
    [
        (MemoryError(), r"out of memory while reading it; give the job more memory"),
        (OSError(5, "Input/output error"), r"I/O error while reading it \(Input/output error\): the file system"),
        (ValueError("not a TIFF"), r"not a readable TIFF file \(corrupt or truncated\?\): not a TIFF"),
    ],
)
def test_read_failures_say_what_happened(tmp_path, monkeypatch, failure, message):
    tifffile.imwrite(tmp_path / "img.tif", np.zeros((2, 8, 8), np.uint8))

    def fail(*args, **kwargs):
        raise failure

    monkeypatch.setattr(tifffile, "TiffFile", fail)
    with pytest.raises(InputDataError, match=r"img\.tif: " + message):
        ingest("d", dataset(tmp_path / "img.tif"), tmp_path / "img.tif", None, tmp_path / "volume.zarr")


def test_a_png_over_pillows_pixel_limit_is_named_as_such(tmp_path):
    folder = tmp_path / "sections"
    folder.mkdir()
    png_declaring(folder / "0.png", 100_000)
    with pytest.raises(InputDataError, match=r"0\.png: refused by Pillow's decompression-bomb guard"):
        ingest("d", dataset(folder), folder, None, tmp_path / "volume.zarr")


def test_a_signed_source_url_is_recorded_without_its_secrets(tmp_path):
    tifffile.imwrite(tmp_path / "img.tif", np.zeros((2, 8, 8), np.uint8))
    config = dataset(tmp_path / "img.tif")
    config["image"]["source"] = "https://me:pw@bucket.example.org/img.tif?X-Amz-Signature=s3cr3t"
    attrs = ingest("d", config, tmp_path / "img.tif", None, tmp_path / "volume.zarr")
    assert attrs["image"]["source"] == "https://bucket.example.org/img.tif"
    root = tmp_path / "volume.zarr"
    assert "s3cr3t" not in (root / "zarr.json").read_text() and "pw@" not in (root / "zarr.json").read_text()

    from unet_pipeline.stages.export import _training_data

    store = volume_store.open_store(root, mode="r+")
    provenance = volume_store.provenance(store)
    provenance["image"]["source"] = "https://me:pw@bucket.example.org/img.tif?token=s3cr3t"  # an older store
    store.attrs[volume_store.PROVENANCE_KEY] = provenance
    assert _training_data(root)["image"]["source"] == "https://bucket.example.org/img.tif"


@pytest.mark.parametrize("foreground, background", [(255, 0), (0, 255)])
def test_anti_aliased_label_pngs_pass_with_a_threshold(tmp_path, foreground, background):
    """Membrane annotations saved as PNG with soft edges: gray values beside the two classes."""
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    values = np.array([0, 3, 5, 6, 7, 14, 128, 200, 250, 255], np.uint8)
    soft = np.resize(values, (2, 20, 20)).astype(np.uint8)
    for z in range(2):
        iio.imwrite(tmp_path / "img" / f"{z}.png", np.zeros((20, 20), np.uint8))
        iio.imwrite(tmp_path / "lab" / f"{z}.png", soft[z])
    config = dataset(tmp_path / "img", tmp_path / "lab")
    config["labels"] |= {"foreground": foreground, "background": background}
    with pytest.raises(InputDataError, match=r"are neither foreground .* or set `threshold` on the labels source"):
        ingest("s", config, tmp_path / "img", tmp_path / "lab", tmp_path / "v.zarr")
    config["labels"]["threshold"] = 127
    attrs = ingest("s", config, tmp_path / "img", tmp_path / "lab", tmp_path / "v.zarr")
    labels = volume_store.open_store(tmp_path / "v.zarr")[volume_store.LABELS_PATH][:]
    bright = soft > 127
    np.testing.assert_array_equal(labels, (bright if foreground > background else ~bright).astype(np.uint8))
    assert attrs["labels"]["threshold"] == 127
    config["labels"]["threshold"] = 255
    with pytest.raises(InputDataError, match=r"labels threshold 255 must lie in \[0, 255\)"):
        ingest("s", config, tmp_path / "img", tmp_path / "lab", tmp_path / "w.zarr")


@pytest.mark.parametrize("sections", [3, 4])
def test_a_stack_of_three_or_four_sections_saved_as_color_reads_with_axes_zyx(tmp_path, sections):
    stack = np.random.default_rng(sections).integers(0, 256, (sections, 12, 10), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "few.tif", stack)  # tifffile stores this as one planar RGB(A) page
    config = dataset(tmp_path / "few.tif")
    with pytest.raises(InputDataError, match=r"found shape .* with axes 'SYX'; .*set `axes: zyx` on this source"):
        ingest("f", config, tmp_path / "few.tif", None, tmp_path / "v.zarr")
    config["image"]["axes"] = "zyx"
    ingest("f", config, tmp_path / "few.tif", None, tmp_path / "v.zarr")
    np.testing.assert_array_equal(volume_store.open_store(tmp_path / "v.zarr")[volume_store.IMAGE_PATH][:], stack)
    tifffile.imwrite(tmp_path / "contig.tif", np.moveaxis(stack, 0, -1), photometric="rgb" if sections == 3 else None)
    config["image"]["source"] = str(tmp_path / "contig.tif")
    ingest("f", config, tmp_path / "contig.tif", None, tmp_path / "c.zarr")
    np.testing.assert_array_equal(volume_store.open_store(tmp_path / "c.zarr")[volume_store.IMAGE_PATH][:], stack)


def test_resample_to_writes_image_and_labels_at_the_new_pixel_size(tmp_path):
    """A stack at 2 nm resampled to 4 nm: half the pixels per side, image and labels aligned, the voxel size and
    the one it came from recorded, the checksums still of the source's pixels, a valid OME-Zarr."""
    from helpers import valid_ome_zarr
    from skimage.transform import resize

    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (2, 40, 60), dtype=np.uint8)
    labels = np.full((2, 40, 60), 255, np.uint8)
    labels[:, :, 28:32] = 0  # a 4-px membrane: 2 px at 4 nm
    tifffile.imwrite(tmp_path / "img.tif", image, photometric="minisblack")
    tifffile.imwrite(tmp_path / "lab.tif", labels, photometric="minisblack")
    config = dataset(tmp_path / "img.tif", tmp_path / "lab.tif", voxel_size=[50.0, 2.0, 2.0], resample_to=[4, 4])
    config["image"]["pixel_sha256"] = hashlib.sha256(image.tobytes()).hexdigest()
    attrs = ingest("r", config, tmp_path / "img.tif", tmp_path / "lab.tif", tmp_path / "v.zarr")
    store = volume_store.open_store(tmp_path / "v.zarr")
    assert attrs["shape"] == [2, 20, 30] and store[volume_store.IMAGE_PATH].shape == (2, 20, 30)
    assert attrs["voxel_size"] == [50.0, 4.0, 4.0] and attrs["resampled_from"] == [50.0, 2.0, 2.0]
    expected = resize(image[1], (20, 30), order=1, anti_aliasing=True, preserve_range=True)
    np.testing.assert_array_equal(store[volume_store.IMAGE_PATH][1], np.rint(expected).astype(np.uint8))
    written = store[volume_store.LABELS_PATH][:]
    assert written.shape == (2, 20, 30) and set(np.unique(written)) == {0, 1}
    assert (written[:, :, 14:16] == 0).all() and written[:, :, :13].all() and written[:, :, 17:].all()
    assert store.attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == [
        50.0,
        4.0,
        4.0,
    ]
    valid_ome_zarr(tmp_path / "v.zarr")

    ids = np.zeros((2, 40, 60), np.uint16)
    ids[:, 4:20, 4:40], ids[:, 24:36, 10:50] = 7, 300
    tifffile.imwrite(tmp_path / "ids.tif", ids)
    config = dataset(tmp_path / "img.tif", tmp_path / "ids.tif", voxel_size=[50.0, 2.0, 2.0], resample_to=[4, 4])
    config["labels"]["type"] = "instance"
    ingest("i", config, tmp_path / "img.tif", tmp_path / "ids.tif", tmp_path / "ids.zarr")
    instance = volume_store.open_store(tmp_path / "ids.zarr")[volume_store.LABELS_PATH][:]
    assert set(np.unique(instance)) == {0, 7, 300} and (instance[:, 2:10, 2:20] == 7).all(), "ids, not blends"


def test_a_resample_to_without_a_voxel_size_or_too_far_is_refused(small_pair, tmp_path):
    image, labels = small_pair
    no_size = {"image": {"source": str(image)}, "resample_to": [4, 4]}
    with pytest.raises(InputDataError, match=r"r: .*img\.tif: resample_to needs the dataset's voxel_size"):
        ingest("r", no_size, image, None, tmp_path / "a.zarr")
    far = dataset(image, labels, voxel_size=[50.0, 0.1, 0.1], resample_to=[4, 4])
    with pytest.raises(InputDataError, match=r"scales the sections by \[0\.025, 0\.025\]; allowed: 0\.125 to 8"):
        ingest("r", far, image, labels, tmp_path / "b.zarr")
    upsampled = dataset(image, labels, voxel_size=[50.0, 32.0, 32.0], resample_to=[4, 4])  # 16 x 16 -> 128 x 128
    with pytest.raises(InputDataError, match=r"img\.tif: resampling a section to \[128, 128\] needs 0 MB"):
        ingest("r", upsampled, image, labels, tmp_path / "c.zarr", MemoryLimit(100_000, "ingest"))
    only_output_or_nothing(tmp_path, ["img.tif", "lab.tif"])


def test_a_zarr_image_to_resample_is_copied_not_linked(tmp_path):
    data = np.random.default_rng(2).integers(0, 256, (2, 40, 40), dtype=np.uint8)
    zarr.create_array(str(tmp_path / "em.zarr"), data=data, chunks=(1, 20, 20))
    config = dataset(tmp_path / "em.zarr", voxel_size=[50.0, 8.0, 8.0], resample_to=[4.0, 4.0])
    attrs = ingest("em", config, tmp_path / "em.zarr", None, tmp_path / "v.zarr")
    assert "linked" not in attrs["image"] and not (tmp_path / "v.zarr" / "0" / "c").is_symlink()
    assert volume_store.open_store(tmp_path / "v.zarr")[volume_store.IMAGE_PATH].shape == (2, 80, 80)
