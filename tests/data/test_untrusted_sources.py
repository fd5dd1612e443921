"""Sources from someone else: they may not read other files of the machine, nor exhaust its memory, nor lose a
section without a word (issue 35, items 1, 2, 4 and 7)."""

import struct
import tracemalloc
import zlib

import h5py
import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import zarr
from helpers import declared_bomb
from unet_pipeline.core.errors import InputDataError
from unet_pipeline.data.readers import MemoryLimit
from unet_pipeline.stages.ingest import ingest

INGEST_MEMORY = MemoryLimit.of_job(2048, "ingest")  # the ingest rule's mem_mb


def dataset(image, **labels):
    config = {"image": {"source": str(image)}, "voxel_size": [50.0, 4.0, 4.0]}
    if labels:
        config["labels"] = {"foreground": 255, "background": 0, **labels}
    return config


def run_ingest(source, tmp_path, memory=INGEST_MEMORY, labels=None, **label_options):
    config = dataset(source, **({"source": str(labels), **label_options} if labels else {}))
    return ingest("d", config, source, labels, tmp_path / "volume.zarr", memory=memory)


@pytest.fixture
def secret(tmp_path):
    """A local file no source may read as pixels."""
    path = tmp_path / "secret.txt"
    path.write_bytes(b"password=hunter2\n" * 4)
    return path


def test_hdf5_external_storage_is_refused(secret, tmp_path):
    source = tmp_path / "external.h5"
    with h5py.File(source, "w") as h5:
        h5.create_dataset("raw", shape=(1, 4, 16), dtype="u1", external=[(str(secret), 0, 64)])
    with pytest.raises(InputDataError, match=rf"{source}: dataset 'raw' keeps its data in external files.*refused"):
        run_ingest(source, tmp_path)
    assert not (tmp_path / "volume.zarr").exists()


def test_hdf5_virtual_datasets_and_external_links_are_refused(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as h5:
        h5["data"] = np.ones((1, 4, 4), np.uint8)
    virtual = tmp_path / "virtual.h5"
    layout = h5py.VirtualLayout(shape=(1, 4, 4), dtype="u1")
    layout[:] = h5py.VirtualSource(str(other), "data", shape=(1, 4, 4))
    with h5py.File(virtual, "w") as h5:
        h5.create_virtual_dataset("raw", layout)
    with pytest.raises(InputDataError, match=rf"{virtual}: dataset 'raw' is virtual"):
        run_ingest(virtual, tmp_path)
    linked = tmp_path / "linked.h5"
    with h5py.File(linked, "w") as h5:
        h5["raw"] = h5py.ExternalLink(str(other), "/data")
    with pytest.raises(InputDataError, match=rf"{linked}: 'raw' is an external link to {other}"):
        run_ingest(linked, tmp_path)
    assert not (tmp_path / "volume.zarr").exists()


def test_a_zarr_chunk_linked_out_of_the_store_is_refused(secret, tmp_path):
    store = tmp_path / "image.zarr"
    zarr.create_array(str(store), shape=(1, 4, 16), chunks=(1, 4, 16), dtype="u1", compressors=None)[:] = 1
    chunk = next(path for path in store.rglob("*") if path.is_file() and path.name != "zarr.json")
    chunk.unlink()
    chunk.symlink_to(secret)
    with pytest.raises(InputDataError, match=r"image\.zarr: c/0/0/0 is a link to .*secret\.txt, outside the Zarr"):
        run_ingest(store, tmp_path)
    with pytest.raises(InputDataError, match=r"key '\.\./x' leads out of the Zarr store"):
        ingest("d", {"image": {"source": str(store), "key": "../x"}}, store, None, tmp_path / "v.zarr")


def test_a_tiny_tiff_declaring_a_huge_section_is_refused_unread(tmp_path):
    source = declared_bomb(tmp_path / "bomb.tif", side=100_000, height=40_000)
    tracemalloc.start()
    with pytest.raises(InputDataError, match=r"bomb\.tif: each of its 1 sections of 40000 x 100000 uint8 needs .*"):
        run_ingest(source, tmp_path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20e6, f"{peak / 1e6:.0f} MB allocated: something was decoded"


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_a_folder_image_is_refused_by_its_header_before_it_is_decoded(suffix, tmp_path):
    """A zlib TIFF or a PNG of 6000 x 6000 zeros is a few hundred KB that decode to 36 MB."""
    folder = tmp_path / "sections"
    folder.mkdir()
    if suffix == ".tif":
        tifffile.imwrite(folder / "0.tif", np.zeros((6000, 6000), np.uint8), compression="zlib")
    else:
        png_bomb(folder / "0.png", 6000)
    assert (folder / f"0{suffix}").stat().st_size < 400_000
    tracemalloc.start()
    with pytest.raises(InputDataError, match=rf"0\{suffix}: this section needs 144 MB to read.*ingest:mem_mb"):
        run_ingest(folder, tmp_path, memory=MemoryLimit(64 * 2**20, "ingest"))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20e6, f"{peak / 1e6:.0f} MB allocated: the image was decoded"


def test_a_later_folder_image_larger_than_the_first_is_refused_before_decoding(tmp_path):
    folder = tmp_path / "sections"
    folder.mkdir()
    iio.imwrite(folder / "0.png", np.zeros((20, 30), np.uint8))
    png_bomb(folder / "1.png", 6000)
    tracemalloc.start()
    with pytest.raises(InputDataError, match=r"1\.png: declares 6000 x 6000 pixels, unlike the folder's first image"):
        run_ingest(folder, tmp_path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20e6 and not (tmp_path / "volume.zarr").exists()


def png_bomb(path, side: int):
    """A gray PNG of side x side zeros, streamed (nothing of its decoded size is ever in memory here)."""
    compressor, row = zlib.compressobj(9), b"\x00" * (side + 1)  # filter byte 0, then the row
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))


@pytest.mark.parametrize("kind", ["hdf5", "zarr"])
def test_chunks_behind_one_section_count_against_the_memory(kind, tmp_path):
    """Sections of 1000 x 1000 (1 MB) in chunks of 10 sections: reading one decodes 10 MB."""
    data = np.zeros((10, 1000, 1000), np.uint8)
    if kind == "hdf5":
        source = tmp_path / "chunked.h5"
        with h5py.File(source, "w") as h5:
            h5.create_dataset("raw", data=data, chunks=(10, 1000, 1000), compression="gzip")
    else:
        source = tmp_path / "chunked.zarr"
        zarr.create_array(str(source), shape=data.shape, chunks=data.shape, dtype="u1")[:] = data
    with pytest.raises(InputDataError, match=r"each of its 10 sections of 1000 x 1000 uint8 needs (24|14) MB"):
        run_ingest(source, tmp_path, memory=MemoryLimit(12 * 2**20, "ingest"))
    run_ingest(source, tmp_path, memory=MemoryLimit(32 * 2**20, "ingest"))  # enough: read as before


def test_a_file_that_is_no_image_in_a_section_folder_is_refused(tmp_path):
    folder = tmp_path / "sections"
    folder.mkdir()
    for z in range(3):
        iio.imwrite(folder / f"{z}.png", np.full((8, 8), z, np.uint8))
    (folder / ".DS_Store").write_bytes(b"\x00")  # hidden: passed over
    run_ingest(folder, tmp_path)
    (folder / "3.html").write_text("<!DOCTYPE html><title>Not found</title>")
    with pytest.raises(InputDataError, match=r"sections: \['3\.html'\] is not a TIFF or PNG image"):
        run_ingest(folder, tmp_path)


def test_nan_in_labels_with_a_threshold_is_refused(tmp_path):
    image, labels = tmp_path / "image.tif", tmp_path / "labels.tif"
    tifffile.imwrite(image, np.zeros((2, 8, 8), np.uint8))
    values = np.full((2, 8, 8), 255.0, np.float32)
    values[1, 3, 3] = np.nan
    tifffile.imwrite(labels, values)
    with pytest.raises(InputDataError, match=r"labels\.tif, section 1: 1 label values are NaN or infinite"):
        run_ingest(image, tmp_path, labels=labels, threshold=128)
    assert not (tmp_path / "volume.zarr").exists()
