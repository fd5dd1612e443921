"""Cells as instance labels, the per-cell table, and multiscale pyramids that validate as OME-Zarr 0.5."""

import numpy as np
import pandas as pd
import pytest
import zarr
from helpers import prediction_store, valid_ome_zarr
from ome_zarr_models.v05.image import Image
from ome_zarr_models.v05.labels import Labels
from unet_pipeline.core.errors import InputDataError
from unet_pipeline.data import volume_store
from unet_pipeline.data.pyramid import level_shapes, write_pyramid
from unet_pipeline.metrics import section_scores
from unet_pipeline.metrics.scores import fscore, rand_counts
from unet_pipeline.segmentation.methods import SegmentationOptions, segment_section
from unet_pipeline.stages.predict import output_attrs
from unet_pipeline.stages.segment import segment_volume
from unet_pipeline.transforms.cells import cells_of


def by_threshold(threshold):
    return SegmentationOptions(method="threshold", threshold=threshold)


def three_cells():
    """Cells of 8x8, 8x8 and 2x2 pixels (probability 0.9) on membrane (0.1)."""
    probability = np.full((12, 24), 0.1, np.float32)
    probability[1:9, 1:9] = 0.9
    probability[1:9, 11:19] = 0.9
    probability[10:12, 21:23] = 0.9
    return probability


def test_cells_tile_the_section_and_small_ones_are_dropped():
    cells = segment_section(three_cells(), by_threshold(0.5))
    assert cells.dtype == np.uint32 and set(np.unique(cells)) == {0, 1, 2, 3}
    assert (cells[three_cells() > 0.5] > 0).all(), "every foreground pixel is in a cell"
    # the flooding splits the membrane among the cells: only the 1-px lines between them stay 0
    assert np.count_nonzero(cells == 0) < np.count_nonzero(three_cells() < 0.5) / 3
    sizes = np.bincount(cells.ravel())[1:]
    smallest = int(np.argmin(sizes)) + 1
    without_small = segment_section(
        three_cells(), SegmentationOptions(method="threshold", threshold=0.5, min_size=int(sizes.min()) + 1)
    )
    assert set(np.unique(without_small)) == {0, 1, 2} and (without_small[cells == smallest] == 0).all()


def test_touching_cells_are_split_by_the_metrics_watershed_line():
    probability = np.full((6, 10), 0.9, np.float32)
    probability[:, 4:6] = 0.3  # a 2-px membrane the threshold 0.2 does not see ...
    probability[2, 4:6] = 0.1  # ... except where it is darker
    cells = segment_section(probability, by_threshold(0.2))
    assert len(np.unique(cells)) == 1, "one cell: the membrane is open above and below"
    probability[:, 4:6] = 0.1
    split = segment_section(probability, by_threshold(0.2))
    assert set(np.unique(split)) == {0, 1, 2} and (split[:, 5] == 0).all(), "the line goes right, like Fiji's"


@pytest.mark.parametrize("block", [64, 4194304])
def test_cell_table_gives_area_centroid_and_box(tmp_path, block):
    """Accumulated block by block (blocks of 8 x 8 pixels) or in one block: the same rows."""
    probability = np.stack([np.full((12, 24), 0.1, np.float32), three_cells()])
    prediction_store(tmp_path / "p.zarr", probability, (1, 6, 12))
    options = SegmentationOptions(method="threshold", threshold=0.5, block=block)
    segment_volume(tmp_path / "p.zarr", tmp_path / "s.zarr", tmp_path / "c.csv", options)
    cells = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")["cells"]["0"][1]
    table = pd.read_csv(tmp_path / "c.csv").set_index("label")
    for label, row in table.iterrows():
        ys, xs = np.nonzero(cells == label)
        assert row.to_dict() == pytest.approx(
            {
                "section": 1,
                "area": len(ys),
                "centroid_y": ys.mean(),
                "centroid_x": xs.mean(),
                "top": ys.min(),
                "left": xs.min(),
                "bottom": ys.max() + 1,
                "right": xs.max() + 1,
            }
        )
    assert len(table) == 3, "section 0 has no cells"


def test_pyramid_levels_halve_until_a_section_fits_one_chunk(tmp_path):
    assert level_shapes((2, 100, 60), (1, 25, 25)) == [(2, 50, 30), (2, 25, 15)]
    probability = np.random.default_rng(0).random((2, 100, 60)).astype(np.float32)
    root = prediction_store(tmp_path / "p.zarr", probability, (1, 25, 25))
    assert write_pyramid(root, "mean") == 3
    stored = root["0"][:].astype(np.float32)
    expected = np.rint((stored[:, ::2, ::2] + stored[:, 1::2, ::2] + stored[:, ::2, 1::2] + stored[:, 1::2, 1::2]) / 4)
    np.testing.assert_array_equal(root["1"][:], expected)
    root.attrs["ome"] = volume_store.image_attrs("probability", [50.0, 4.0, 4.0], "nanometer", levels=3)
    image = valid_ome_zarr(tmp_path / "p.zarr")
    assert isinstance(image, Image)
    scales = [d["coordinateTransformations"][0]["scale"] for d in root.attrs["ome"]["multiscales"][0]["datasets"]]
    assert scales == [[50.0, 4.0, 4.0], [50.0, 8.0, 8.0], [50.0, 16.0, 16.0]]


def test_segment_volume_writes_a_valid_label_store_and_table(tmp_path):
    probability = np.stack([three_cells(), np.full((12, 24), 0.1, np.float32)])
    prediction_store(tmp_path / "p.zarr", probability, (1, 6, 12))
    info = segment_volume(tmp_path / "p.zarr", tmp_path / "s.zarr", tmp_path / "c.csv", by_threshold(0.5))
    assert info["cells"] == 3 and info["segmentation"]["threshold"] == 0.5
    assert isinstance(valid_ome_zarr(tmp_path / "s.zarr"), Labels)
    cells = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")["cells"]
    assert cells["0"].dtype == np.uint32 and cells["0"].shape == (2, 12, 24) and "1" in cells
    assert cells.attrs["ome"]["image-label"]["source"]["image"] == "../../../volume.zarr"
    np.testing.assert_array_equal(cells["0"][0], segment_section(three_cells(), by_threshold(0.5)))
    table = pd.read_csv(tmp_path / "c.csv")
    assert table["section"].tolist() == [0, 0, 0] and table["area"].sum() == np.count_nonzero(cells["0"][0])


def test_segment_volume_refuses_a_store_without_probabilities(tmp_path):
    zarr.open_group(str(tmp_path / "empty.zarr"), mode="w")
    with pytest.raises(InputDataError, match="empty.zarr: not a prediction store"):
        segment_volume(tmp_path / "empty.zarr", tmp_path / "s.zarr", tmp_path / "c.csv", by_threshold(0.5))
    assert not (tmp_path / "s.zarr").exists() and not (tmp_path / "c.csv").exists()


def test_segmentation_scores_what_the_evaluation_scored(isbi_dir):
    import tifffile
    from scipy import ndimage

    labels = (tifffile.imread(isbi_dir / "train-labels.tif")[25, :160, :160] == 255).astype(np.uint8)
    rng = np.random.default_rng(1)
    blurred = ndimage.gaussian_filter(labels.astype(np.float32), 1.5) + rng.normal(0, 0.15, labels.shape)
    probability = volume_store.decode_probability(volume_store.encode_probability(blurred, "uint8"))
    truth = cells_of(labels)
    for threshold in (0.3, 0.5):
        evaluated = section_scores(probability, truth, [threshold])[0]["v_rand"]
        cells = segment_section(probability, by_threshold(threshold))
        assert fscore(**rand_counts(truth, cells))[2] == pytest.approx(evaluated, abs=1e-12)


@pytest.mark.parametrize(
    "data, message",
    [
        (np.full((2, 12, 24), 0.5, np.float32), None),
        (
            np.full((12, 24), 0.5, np.float32),
            r"p.zarr: 0 is float32 of shape \(12, 24\), not a \(z, y, x\) probability",
        ),
        (np.full((2, 12, 24), 7, np.int32), r"p.zarr: 0 is int32 of shape \(2, 12, 24\)"),
    ],
)
def test_segment_volume_refuses_a_store_of_the_wrong_shape_or_type(tmp_path, data, message):
    root = zarr.open_group(str(tmp_path / "p.zarr"), mode="w")
    root.create_array("0", data=data)
    root.attrs.update(output_attrs({"model": "m.pt"}, tmp_path / "p.zarr"))
    if message is None:  # the control: the same store, well formed, segments
        segment_volume(tmp_path / "p.zarr", tmp_path / "s.zarr", tmp_path / "c.csv", by_threshold(0.4))
        return
    with pytest.raises(InputDataError, match=message):
        segment_volume(tmp_path / "p.zarr", tmp_path / "s.zarr", tmp_path / "c.csv", by_threshold(0.4))
    assert not (tmp_path / "s.zarr").exists() and not (tmp_path / "c.csv").exists()


def test_segment_volume_refuses_nan_and_leaves_nothing(tmp_path):
    probability = np.stack([three_cells(), three_cells()])
    probability[1, 3, 4] = np.nan
    root = zarr.open_group(str(tmp_path / "p.zarr"), mode="w")
    root.create_array("0", data=probability)
    root.attrs.update(output_attrs({"model": "m.pt"}, tmp_path / "p.zarr"))
    for method in ("threshold", "multicut"):
        options = SegmentationOptions(method=method, threshold=0.5, edge_threshold=0.5)
        with pytest.raises(InputDataError, match="p.zarr: section 1 holds NaN"):
            segment_volume(tmp_path / "p.zarr", tmp_path / "s.zarr", tmp_path / "c.csv", options)
        assert [path.name for path in tmp_path.iterdir()] == ["p.zarr"], "nothing half-written"


def test_a_summary_without_cells_is_refused_by_name(tmp_path):
    from unet_pipeline.stages.segment import chosen_setting

    (tmp_path / "summary.json").write_text('{"metrics": {}}')
    with pytest.raises(InputDataError, match="summary.json: no V_rand setting of the cells"):
        chosen_setting(tmp_path / "summary.json", SegmentationOptions())
    with pytest.raises(InputDataError, match="missing.json: no V_rand setting"):
        chosen_setting(tmp_path / "missing.json", SegmentationOptions())
