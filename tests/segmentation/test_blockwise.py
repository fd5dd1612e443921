"""Cells made block by block (segmentation.blockwise, through the segment stage) against the unchunked cells
of the same probabilities, 3D cells against known cells, and a segmentation that continues after a crash."""

import numpy as np
import pandas as pd
import pytest
import zarr
from helpers import prediction_store
from scipy import ndimage
from unet_pipeline.data import volume_store
from unet_pipeline.segmentation import volume as segmenter_module
from unet_pipeline.segmentation.blockwise import blocks
from unet_pipeline.segmentation.methods import SegmentationOptions, cells_at
from unet_pipeline.stages.segment import TABLE_COLUMNS_3D, segment_shard, segment_volume


def voronoi(shape, count, seed, spacing=None):
    """True cells: each pixel belongs to its nearest of ``count`` random points (ids 1..count)."""
    rng = np.random.default_rng(seed)
    markers = np.zeros(shape, np.int32)
    markers[tuple(rng.integers(0, n, count) for n in shape)] = np.arange(1, count + 1)
    _, nearest = ndimage.distance_transform_edt(markers == 0, sampling=spacing, return_indices=True)
    return markers[tuple(nearest)]


def membranes(cells, seed):
    """A network's probability of such cells: 0.95 inside, low on 2-px membranes between them, noisy."""
    edge = np.zeros(cells.shape, bool)
    for axis in range(cells.ndim):
        here = [slice(None)] * cells.ndim
        after = [slice(None)] * cells.ndim
        here[axis], after[axis] = slice(0, -1), slice(1, None)
        differ = cells[tuple(here)] != cells[tuple(after)]
        edge[tuple(here)] |= differ
        edge[tuple(after)] |= differ
    probability = ndimage.gaussian_filter(np.where(edge, 0.05, 0.95).astype(np.float32), 1.0)
    noise = np.random.default_rng(seed).normal(0, 0.03, cells.shape)
    return np.clip(probability + noise, 0, 1).astype(np.float32)


def written(tmp_path, prediction, options, name="s"):
    segment_volume(prediction, tmp_path / f"{name}.zarr", tmp_path / f"{name}.csv", options)
    return zarr.open_group(str(tmp_path / f"{name}.zarr"), mode="r")["cells"]["0"][:]


@pytest.mark.parametrize("shape", [(37, 50), (5, 17, 9)])
def test_blocks_cover_every_pixel_once(shape):
    count = np.zeros(shape, int)
    for block in blocks(shape, 8, 3):
        count[block.inner] += 1
        outer = np.zeros(shape, bool)
        outer[block.outer] = True
        assert outer[block.inner].all() and outer.sum() <= np.prod([min(n, 14) for n in shape])
    assert (count == 1).all()


# method -> a setting at which it finds the synthetic cells (membranes blurred to a boundary of about 0.5)
SETTINGS = {"quantile_linkage": 0.3, "mean_linkage": 0.6, "multicut": 0.6, "threshold": 0.5}


@pytest.mark.parametrize("method", ["quantile_linkage", "mean_linkage", "multicut", "threshold"])
def test_cells_made_in_blocks_equal_the_unchunked_cells(tmp_path, method):
    """Blocks of 40 x 40 with a halo of 48: every section's cells equal the unchunked ones, ids included."""
    truth = np.stack([voronoi((130, 150), 40, seed) for seed in (0, 1)])
    probability = np.stack([membranes(section, seed) for seed, section in enumerate(truth)])
    stored = volume_store.decode_probability(np.rint(probability * 255).astype(np.uint8))
    setting = SETTINGS[method]
    options = SegmentationOptions(method=method, block=1600, halo=48).with_setting(setting)
    prediction_store(tmp_path / "p.zarr", probability)
    cells = written(tmp_path, tmp_path / "p.zarr", options)
    tried = equal = 0
    for section, found in zip(stored, cells):
        expected = cells_at(section, options)(setting)
        tried += 1
        equal += np.array_equal(found, expected)
        assert len(np.unique(expected)) > 10
    assert equal == tried == 2, f"{equal} of {tried} sections equal"


@pytest.mark.parametrize("method, setting", [("quantile_linkage", 0.3), ("mean_linkage", 0.4)])
def test_3d_cells_recover_known_cells_and_do_not_depend_on_the_blocks(tmp_path, method, setting):
    """FIB-SEM-like: cells through the volume; the graph joins fragments across sections."""
    truth = voronoi((24, 40, 40), 12, 3)
    prediction = tmp_path / "p.zarr"
    prediction_store(prediction, membranes(truth, 3), scale=(5.0, 5.0, 5.0))
    options = SegmentationOptions(method=method, edge_threshold=setting, dimensions=3, halo=24)
    whole = written(tmp_path, prediction, options, "whole")
    in_blocks = written(tmp_path, prediction, SegmentationOptions(**{**options.__dict__, "block": 4096}), "blocks")
    np.testing.assert_array_equal(in_blocks, whole)
    core = ndimage.binary_erosion(membranes(truth, 3) > 0.9, iterations=2)  # 2 px and more from a membrane
    pairs = np.unique(np.stack([truth[core], whole[core]]), axis=1)
    assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == len(pairs[1]), "one found cell per true cell"
    assert len(pairs[1]) >= 11, "every true cell with a core (one has none) is found"
    assert (whole > 0).mean() > 0.8
    table = pd.read_csv(tmp_path / "whole.csv").set_index("label")
    assert list(table.columns) == TABLE_COLUMNS_3D[1:] and table["area"].sum() == (whole > 0).sum()
    zs, ys, xs = np.nonzero(whole == 5)
    assert table.loc[5, ["front", "top", "left"]].tolist() == [zs.min(), ys.min(), xs.min()]
    assert table.loc[5, ["back", "bottom", "right"]].tolist() == [zs.max() + 1, ys.max() + 1, xs.max() + 1]
    assert table.loc[5, "centroid_z"] == pytest.approx(zs.mean())
    per_section = written(tmp_path, prediction, SegmentationOptions(method=method, edge_threshold=setting), "sections")
    assert per_section.max() < whole.max() * 3 and len(np.unique(per_section[0])) > 1, "2D: ids per section"


def test_a_crashed_segmentation_continues_where_it_stopped(tmp_path, monkeypatch):
    truth = np.stack([voronoi((90, 90), 20, seed) for seed in (4, 5, 6)])
    prediction = tmp_path / "p.zarr"
    prediction_store(prediction, np.stack([membranes(s, 0) for s in truth]))
    options = SegmentationOptions(edge_threshold=SETTINGS["quantile_linkage"], block=900, halo=32)
    expected = written(tmp_path, prediction, options, "control")
    calls = {"fragments": 0, "pieces": 0}
    real_fragments, real_pieces = segmenter_module.block_fragments, segmenter_module.block_pieces

    def counted_fragments(*args):
        calls["fragments"] += 1
        return real_fragments(*args)

    def crashing_pieces(*args):
        calls["pieces"] += 1
        if calls["pieces"] == 13:  # the fourth block of the second section
            raise MemoryError("the node ran out of memory")
        return real_pieces(*args)

    monkeypatch.setattr(segmenter_module, "block_fragments", counted_fragments)
    monkeypatch.setattr(segmenter_module, "block_pieces", crashing_pieces)
    with pytest.raises(MemoryError):
        written(tmp_path, prediction, options)
    assert not (tmp_path / "s.zarr").exists() and (tmp_path / ".s.zarr.work").exists()
    before = dict(calls)
    np.testing.assert_array_equal(written(tmp_path, prediction, options), expected)
    blocks_per_section = len(blocks((90, 90), options.side(2), options.halo))
    assert blocks_per_section == 9 and before["pieces"] == 13
    assert before["fragments"] == 2 * blocks_per_section, "the crash came in the second section's pieces"
    assert calls["fragments"] - before["fragments"] == blocks_per_section, "only the unfinished section again"
    assert calls["pieces"] - before["pieces"] == 3 * blocks_per_section - 12, "the blocks not yet done"
    assert not (tmp_path / ".s.zarr.work").exists(), "the work folder goes once the output is in place"


@pytest.mark.parametrize("dimensions", [2, 3])
def test_shard_jobs_fill_the_work_folder_and_the_segment_job_only_writes(tmp_path, monkeypatch, dimensions):
    """segmentation.shards: 3 jobs, each its run of sections (3D: of fragment blocks), give the cells of one job."""
    truth = voronoi((5, 60, 60), 30, 7)
    prediction = tmp_path / "p.zarr"
    prediction_store(prediction, membranes(truth, 7))
    options = SegmentationOptions(edge_threshold=0.5, dimensions=dimensions, block=900 if dimensions == 2 else 8000)
    expected = written(tmp_path, prediction, options, "control")
    done = [segment_shard(prediction, tmp_path / "s.zarr", options, shard, 3) for shard in range(3)]
    assert done == ([2, 1, 2] if dimensions == 2 else [3, 3, 3]), "sections, or blocks of fragments, per shard"
    computed = []
    monkeypatch.setattr(segmenter_module, "block_fragments", lambda *args: computed.append(args))
    np.testing.assert_array_equal(written(tmp_path, prediction, options), expected)
    assert computed == [], "the shards made every fragment"
    assert not (tmp_path / ".s.zarr.work").exists()


def test_a_work_folder_with_a_damaged_signature_is_discarded(tmp_path):
    """A work folder whose signature cannot be read (a disk error, a hand edit) is not continued from."""
    truth = np.stack([voronoi((60, 60), 10, 8)])
    prediction = tmp_path / "p.zarr"
    prediction_store(prediction, membranes(truth, 8))
    options = SegmentationOptions(edge_threshold=SETTINGS["quantile_linkage"], block=900)
    expected = written(tmp_path, prediction, options, "control")
    work = tmp_path / ".s.zarr.work"
    (work / "edges").mkdir(parents=True)
    (work / "edges" / "0").write_text("not what a run left")
    (work / "signature.json").write_text('{"prediction": ')
    np.testing.assert_array_equal(written(tmp_path, prediction, options), expected)
    assert not work.exists()
