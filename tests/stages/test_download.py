"""Sources with mirrors, over a loopback HTTP server: the pixel checksum decides which one is accepted."""

import hashlib

import h5py
import numpy as np
import pytest
import tifffile
from helpers import declared_bomb, run_snakemake, tiny_config, write_config
from unet_pipeline.core.errors import DownloadError
from unet_pipeline.data import volume_store
from unet_pipeline.data.readers import MemoryLimit
from unet_pipeline.stages.download import Candidate, candidates, fetch_verified

OPTIONS = {"retries": 0, "backoff_s": 0.01, "timeout_s": 5.0}


def pixel_sha256(stack: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(stack).tobytes()).hexdigest()


@pytest.fixture
def published(tiny_isbi, tmp_path):
    """The tiny ISBI image as per-section TIFFs, inverted per-section TIFFs, and an HDF5 file (raw)."""
    image = tifffile.imread(tiny_isbi / "train-volume.tif")
    for name, stack in (("sections", image), ("inverted", 255 - image)):
        (tmp_path / name).mkdir()
        for z, section in enumerate(stack):
            tifffile.imwrite(tmp_path / name / f"{z}.tif", section)
    with h5py.File(tmp_path / "isbi.h5", "w") as h5:
        h5["raw"] = image
        h5["labels/membranes"] = 255 - tifffile.imread(tiny_isbi / "train-labels.tif")
    return tmp_path, image


def test_candidates_expand_patterns_and_lists():
    spec = {
        "key": None,
        "mirrors": [
            {"source": "http://m/{z}.tif", "sections": 3},
            {"source": ["http://n/a.tif", "http://n/b.tif"]},
            {"source": "http://h/download", "key": "raw", "sha256": "ab" * 32},
        ],
    }
    found = candidates("http://official/train-volume.tif", spec)
    assert [c.urls for c in found] == [
        ("http://official/train-volume.tif",),
        ("http://m/0.tif", "http://m/1.tif", "http://m/2.tif"),
        ("http://n/a.tif", "http://n/b.tif"),
        ("http://h/download",),
    ]
    assert found[3].key == "raw" and found[3].sha256 == "ab" * 32


def test_first_mirror_down_wrong_pixels_skipped_the_right_one_accepted(published, serve, tmp_path, caplog):
    folder, image = published
    base, requests = serve(folder)
    found = [
        Candidate((f"{base}/error500/train-volume.tif",)),  # the official site is down
        Candidate(tuple(f"{base}/plain/inverted/{z}.tif" for z in range(3))),  # other polarity
        Candidate(tuple(f"{base}/plain/sections/{z}.tif" for z in range(3))),
    ]
    dest = tmp_path / "out" / "train-volume.tif"
    accepted = fetch_verified(found, dest, {"pixel_sha256": pixel_sha256(image)}, OPTIONS)
    assert accepted is found[2]
    np.testing.assert_array_equal(tifffile.imread(dest), image)
    assert "HTTP 500" in caplog.text and "its pixels differ from the expected ones" in caplog.text
    paths = [path for path, _ in requests]
    assert paths[0] == "/error500/train-volume.tif" and paths[1:4] == [f"/plain/inverted/{z}.tif" for z in range(3)]
    assert sorted(p.name for p in dest.parent.iterdir()) == ["train-volume.tif"], "no temporary files left"


def test_an_hdf5_mirror_without_a_suffix_is_read_by_its_key(published, serve, tmp_path):
    folder, image = published
    (folder / "download").write_bytes((folder / "isbi.h5").read_bytes())  # served as .../download, like torch-em's
    base, _ = serve(folder)
    file_sha = hashlib.sha256((folder / "isbi.h5").read_bytes()).hexdigest()
    found = [Candidate((f"{base}/missing.tif",)), Candidate((f"{base}/download",), key="raw", sha256=file_sha)]
    fetch_verified(found, tmp_path / "v.tif", {"pixel_sha256": pixel_sha256(image)}, OPTIONS)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "v.tif"), image)


def test_nothing_usable_names_every_candidate_and_leaves_nothing(published, serve, tmp_path):
    folder, image = published
    base, _ = serve(folder)
    found = [Candidate((f"{base}/missing.tif",)), Candidate(tuple(f"{base}/plain/inverted/{z}.tif" for z in range(3)))]
    with pytest.raises(DownloadError, match=r"(?s)neither the source nor any mirror.*404.*pixels differ"):
        fetch_verified(found, tmp_path / "out" / "v.tif", {"pixel_sha256": pixel_sha256(image)}, OPTIONS)
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.workflow
def test_the_workflow_falls_back_to_a_mirror(published, serve, tiny_isbi, tmp_path):
    folder, image = published
    base, _ = serve(folder)
    config = tiny_config(f"{base}/nowhere")  # the configured site answers 404 for everything
    image_spec = config["datasets"]["tiny"]["image"]
    image_spec["pixel_sha256"] = pixel_sha256(image)
    image_spec["mirrors"] = [
        {"source": f"{base}/plain/inverted/{{z}}.tif", "sections": 3},
        {"source": f"{base}/plain/sections/{{z}}.tif", "sections": 3},
    ]
    config["datasets"]["tiny"]["labels"]["source"] = str(tiny_isbi / "train-labels.tif")  # local: read in place
    write_config(tmp_path / "config.yaml", config)
    run_snakemake(tmp_path, "results/tiny/volume.zarr", "--configfile", "config.yaml")
    stored = volume_store.open_store(tmp_path / "results" / "tiny" / "volume.zarr")[volume_store.IMAGE_PATH][:]
    np.testing.assert_array_equal(stored, image)
    log = (tmp_path / "results" / "logs" / "download" / "tiny.image.train-volume.tif.log").read_text()
    assert "404" in log and "pixels differ" in log and "accepted" in log


def test_a_file_declaring_sections_the_job_cannot_hold_is_refused_unread(serve, tmp_path):
    folder = tmp_path / "served"
    folder.mkdir()
    declared_bomb(folder / "bomb.tif")
    base, _ = serve(folder)
    dest = tmp_path / "out" / "bomb.tif"
    message = (
        r"each of its 1 sections of 200000 x 200000 uint8 needs 160000 MB to read, more than this job's memory "
        r"\(268 MB\) allows; .*--set-resources download:mem_mb=N"
    )
    with pytest.raises(DownloadError, match=message):
        fetch_verified([Candidate((f"{base}/bomb.tif",))], dest, {}, OPTIONS, MemoryLimit(256 * 2**20, "download"))
    assert sorted(p.name for p in dest.parent.iterdir()) == []


def test_a_relative_mirror_path_moves_on_to_the_next_mirror(published, serve, tmp_path):
    folder, image = published
    base, _ = serve(folder)
    found = [Candidate(("sections/0.tif",)), Candidate(tuple(f"{base}/plain/sections/{z}.tif" for z in range(3)))]
    accepted = fetch_verified(found, tmp_path / "out" / "image.tif", {"pixel_sha256": pixel_sha256(image)}, OPTIONS)
    assert accepted is found[1]


def test_a_killed_runs_download_folder_is_removed_by_the_next(published, serve, tmp_path):
    folder, _ = published
    base, _ = serve(folder)
    dest = tmp_path / "out" / "image.tif"
    stale = dest.parent / f".{dest.name}.download-abc123" / "sections"  # what a SIGKILL left of a download folder
    stale.mkdir(parents=True)
    (stale / "000000.tif").write_bytes(b"x" * 1000)
    fetch_verified([Candidate(tuple(f"{base}/plain/sections/{z}.tif" for z in range(3)))], dest, {}, OPTIONS)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["image.tif"]


def test_a_section_list_with_an_error_page_fails_instead_of_losing_a_section(published, serve, tmp_path):
    folder, _ = published
    (folder / "sections" / "1.html").write_text("<!DOCTYPE html><html><title>Rate limited</title></html>")
    base, _ = serve(folder)
    urls = (f"{base}/plain/sections/0.tif", f"{base}/plain/sections/1.html", f"{base}/plain/sections/2.tif")
    dest = tmp_path / "out" / "image.tif"
    with pytest.raises(
        DownloadError, match=r"sections/1\.html: section 1 is neither a TIFF nor a PNG \(it starts b'<!"
    ):
        fetch_verified([Candidate(urls)], dest, {}, OPTIONS)
    assert list(dest.parent.iterdir()) == []


def test_a_remote_source_is_read_with_its_channel_and_axes(serve, tmp_path):
    rgb = np.random.default_rng(3).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    (tmp_path / "served").mkdir()
    tifffile.imwrite(tmp_path / "served" / "rgb.tif", rgb, photometric="rgb")
    stack = np.random.default_rng(4).integers(0, 256, (3, 16, 16), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "served" / "samples.tif", stack)  # one page of 3 samples: sections with axes zyx
    base, _ = serve(tmp_path / "served")
    spec = {"channel": 1, "pixel_sha256": pixel_sha256(rgb[..., 1])}
    fetch_verified([Candidate((f"{base}/rgb.tif",))], tmp_path / "out" / "rgb.tif", spec, OPTIONS)
    spec = {"axes": "zyx", "pixel_sha256": pixel_sha256(stack)}
    fetch_verified([Candidate((f"{base}/samples.tif",))], tmp_path / "out" / "samples.tif", spec, OPTIONS)


@pytest.mark.workflow
def test_credentials_in_a_source_url_stay_out_of_logs_metadata_and_provenance(serve, tiny_isbi, tmp_path):
    """A URL with user:password@ and a signed query, and a color image read by its channel, through snakemake."""
    rgb = np.stack([tifffile.imread(tiny_isbi / "train-volume.tif")] * 3, axis=-1)
    rgb[..., 0] = 0
    (tmp_path / "served").mkdir()
    tifffile.imwrite(tmp_path / "served" / "train-volume.tif", rgb, photometric="rgb")
    base, requests = serve(tmp_path / "served")
    host = base.removeprefix("http://")
    config = tiny_config(str(tiny_isbi))
    image = config["datasets"]["tiny"]["image"]
    image["source"] = f"http://alice:s3cret@{host}/train-volume.tif?X-Amz-Signature=feedface0123&X-Amz-Expires=60"
    image["channel"] = 1
    write_config(tmp_path / "config.yaml", config)
    run = run_snakemake(tmp_path, "results/tiny/volume.zarr", "--configfile", "config.yaml")
    assert requests.auth[0] is not None, "the credentials reached the server"
    stored = volume_store.open_store(tmp_path / "results" / "tiny" / "volume.zarr")
    np.testing.assert_array_equal(stored[volume_store.IMAGE_PATH][:], rgb[..., 1])
    assert volume_store.provenance(stored)["image"]["source"] == f"{base}/train-volume.tif"
    texts = [run.stdout, run.stderr]
    for folder in (tmp_path / ".snakemake", tmp_path / "results"):
        texts += [path.read_bytes().decode("latin-1") for path in folder.rglob("*") if path.is_file()]
    leaks = [secret for secret in ("s3cret", "alice", "feedface0123") if any(secret in text for text in texts)]
    assert not leaks, f"{leaks} written by the run"
