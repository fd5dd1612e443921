"""The evaluation of the cells: every setting of the method scored, each metric's setting chosen on the
validation sections only, and the cells the segment stage then writes scoring exactly what the summary says."""

import json

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr
from unet_pipeline.core.errors import InputDataError
from unet_pipeline.data import volume_store
from unet_pipeline.metrics.scores import threshold_row
from unet_pipeline.metrics.summary import stack_scores
from unet_pipeline.segmentation.methods import SegmentationOptions
from unet_pipeline.segmentation.proposal import proposal_of
from unet_pipeline.stages.evaluate import describe, evaluate, headline_table
from unet_pipeline.stages.ingest import ingest
from unet_pipeline.stages.predict import output_attrs
from unet_pipeline.stages.segment import chosen_setting, segment_volume
from unet_pipeline.transforms.cells import cells_of

SEARCH = (0.3, 0.5, 0.7)


def isbi_crops(isbi_dir, folder, labels=None):
    """Six 96-px ISBI crops (validation 0-2, test 3-5) as a volume store, and a noisy prediction of them."""
    from scipy import ndimage

    image = tifffile.imread(isbi_dir / "train-volume.tif")[20:26, :96, :96]
    truth = tifffile.imread(isbi_dir / "train-labels.tif")[20:26, :96, :96] if labels is None else labels
    tifffile.imwrite(folder / "img.tif", image, photometric="minisblack")
    tifffile.imwrite(folder / "lab.tif", truth, photometric="minisblack")
    config = {"image": {"source": "i"}, "labels": {"source": "l"}, "sections": {"validation": "0-2", "test": "3-5"}}
    ingest("d", config, folder / "img.tif", folder / "lab.tif", folder / "volume.zarr")
    rng = np.random.default_rng(4)
    isbi = tifffile.imread(isbi_dir / "train-labels.tif")[20:26, :96, :96] > 0
    noisy = ndimage.gaussian_filter(isbi.astype(np.float32), (0, 1.5, 1.5)) + rng.normal(0, 0.2, isbi.shape)
    probability = np.clip(noisy, 0, 1)
    root = zarr.open_group(str(folder / "prediction.zarr"), mode="w")
    root.create_array("0", data=np.rint(probability * 255).astype(np.uint8), chunks=(1, 96, 96))
    root.attrs.update(output_attrs({"model": "m.pt", "model_metadata": {}}, folder / "volume.zarr"))
    return folder


def run(folder, options, name="s"):
    return evaluate(
        folder / "prediction.zarr",
        folder / "volume.zarr",
        folder / f"{name}.csv",
        folder / f"{name}.json",
        cells=options,
        cells_csv=folder / f"{name}_cells.csv",
    )


def chosen(metrics):
    return {name: entry["threshold"] for name, entry in metrics.items()}


@pytest.mark.parametrize("method", ["multicut", "mean_linkage", "quantile_linkage"])
def test_settings_are_chosen_without_reading_the_held_out_sections(isbi_dir, tmp_path, method):
    options = SegmentationOptions(method=method, search=SEARCH)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    summary = run(isbi_crops(isbi_dir, tmp_path / "a"), options)
    table = pd.read_csv(tmp_path / "a" / "s_cells.csv")
    assert len(table) == 6 * len(SEARCH) and sorted(table["threshold"].unique()) == list(SEARCH)
    assert summary["cells"]["method"] == method and summary["cells"]["tuned"] == "edge_threshold"
    # the test sections' labels replaced by noise: every choice stays, the held-out values move
    labels = tifffile.imread(isbi_dir / "train-labels.tif")[20:26, :96, :96].copy()
    labels[3:] = np.random.default_rng(5).choice([0, 255], labels[3:].shape, p=[0.3, 0.7])
    scrambled = run(isbi_crops(isbi_dir, tmp_path / "b", labels), options)
    assert chosen(scrambled["cells"]["metrics"]) == chosen(summary["cells"]["metrics"])
    assert chosen(scrambled["metrics"]) == chosen(summary["metrics"])
    assert scrambled["cells"]["metrics"]["v_rand"]["value"] < summary["cells"]["metrics"]["v_rand"]["value"] - 0.1


@pytest.mark.parametrize("method", ["multicut", "quantile_linkage"])
def test_the_written_cells_score_what_the_summary_reports(isbi_dir, tmp_path, method):
    folder = isbi_crops(isbi_dir, tmp_path)
    summary = run(folder, SegmentationOptions(method=method, search=SEARCH))
    options = chosen_setting(folder / "s.json", SegmentationOptions(method=method, search=SEARCH))
    assert options.edge_threshold == summary["cells"]["metrics"]["v_rand"]["threshold"]
    segment_volume(folder / "prediction.zarr", folder / "cells.zarr", folder / "cells.csv", options)
    written = zarr.open_group(str(folder / "cells.zarr"), mode="r")["cells"]["0"][:]
    labels = volume_store.open_store(folder / "volume.zarr")[volume_store.LABELS_PATH]
    rows = [threshold_row(cells_of(labels[z]), proposal_of(written[z]).astype(np.float32), 0.5) for z in (3, 4, 5)]
    assert stack_scores(rows)["v_rand"] == summary["cells"]["metrics"]["v_rand"]["value"]
    assert f"the cells ({method}; edge_threshold chosen on: validation, its scores averaged within +-0.1)" in describe(
        summary
    )
    table = headline_table([json.loads((folder / "s.json").read_text())])
    assert table.columns.tolist() == ["score", "d / : threshold on p", f"d / : cells, {method} (edge_threshold)"]
    v_rand = summary["cells"]["metrics"]["v_rand"]
    assert (
        table.iloc[1, 2]
        == f"{v_rand['value']:.6f} at {v_rand['threshold']} (best {v_rand['best_over_thresholds']['value']:.6f})"
    )


def test_a_summary_of_another_method_is_refused(isbi_dir, tmp_path):
    from unet_pipeline.core.errors import InputDataError

    folder = isbi_crops(isbi_dir, tmp_path)
    run(folder, SegmentationOptions(method="mean_linkage", search=SEARCH))
    with pytest.raises(InputDataError, match="s.json: its cells were made by 'mean_linkage'"):
        chosen_setting(folder / "s.json", SegmentationOptions(method="multicut"))
    assert (
        chosen_setting(folder / "s.json", SegmentationOptions(method="multicut", edge_threshold=0.4)).edge_threshold
        == 0.4
    )


def test_a_summary_of_another_quantile_is_refused(isbi_dir, tmp_path):
    """The edge threshold chosen for one quantile does not carry over to another."""
    folder = isbi_crops(isbi_dir, tmp_path)
    summary = run(folder, SegmentationOptions(method="quantile_linkage", quantile=0.1, search=SEARCH))
    assert summary["cells"]["quantile"] == 0.1
    with pytest.raises(
        InputDataError,
        match=r"made by 'quantile_linkage' \(quantile 0.1\).*configured 'quantile_linkage' \(quantile 0.05\)",
    ):
        chosen_setting(folder / "s.json", SegmentationOptions(method="quantile_linkage"))
    same = chosen_setting(folder / "s.json", SegmentationOptions(method="quantile_linkage", quantile=0.1))
    assert same.edge_threshold == summary["cells"]["metrics"]["v_rand"]["threshold"]


def test_the_cells_submission_tiff_scores_what_the_summary_reports(isbi_dir, tmp_path):
    from unet_pipeline.metrics.__main__ import main as metrics_main
    from unet_pipeline.stages.segment import write_cells_tiff

    folder = isbi_crops(isbi_dir, tmp_path)
    summary = run(folder, SegmentationOptions(method="multicut", search=SEARCH))
    options = chosen_setting(folder / "s.json", SegmentationOptions(method="multicut", search=SEARCH))
    segment_volume(folder / "prediction.zarr", folder / "cells.zarr", folder / "cells.csv", options)
    write_cells_tiff(folder / "cells.zarr", folder / "cells.tif")
    pages = tifffile.imread(folder / "cells.tif")
    assert pages.dtype == np.float32 and set(np.unique(pages)) == {0.0, 1.0}
    held_out = tifffile.imread(folder / "lab.tif")[3:]
    tifffile.imwrite(folder / "held_out.tif", pages[3:], photometric="minisblack")
    tifffile.imwrite(folder / "held_out_labels.tif", held_out, photometric="minisblack")
    assert (
        metrics_main(
            [str(folder / "held_out.tif"), str(folder / "held_out_labels.tif"), "--json", str(folder / "m.json")]
        )
        == 0
    )
    per_threshold = json.loads((folder / "m.json").read_text())["per_threshold"]
    scored = next(row["v_rand"] for row in per_threshold if row["threshold"] == 0.5)
    assert scored == summary["cells"]["metrics"]["v_rand"]["value"]
    with pytest.raises(InputDataError, match="prediction.zarr: not a segmentation store"):
        write_cells_tiff(folder / "prediction.zarr", folder / "wrong.tif")
    assert not (folder / "wrong.tif").exists()


def test_ome_zarr_reads_the_cells_as_labels_of_their_volume(isbi_dir, tmp_path):
    """napari's route: ome-zarr's reader finds the cells as an image-label and, through its source, the volume."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    folder = isbi_crops(isbi_dir, tmp_path)
    options = SegmentationOptions(method="multicut", edge_threshold=0.5)
    (folder / "segmentation").mkdir()
    store = folder / "segmentation" / "cells.zarr"  # as results/{dataset}/segmentation/{preset}.zarr
    segment_volume(folder / "prediction.zarr", store, folder / "cells.csv", options)
    nodes = list(Reader(parse_url(str(store / "cells")))())
    label = next(node for node in nodes if str(node.zarr.path).endswith("cells.zarr/cells"))
    assert any(isinstance(spec, Label) for spec in label.specs)
    written = zarr.open_group(str(store), mode="r")["cells"]["0"][:]
    np.testing.assert_array_equal(label.data[0].compute(), written)
    source = next(node for node in nodes if node is not label and any(isinstance(s, Multiscales) for s in node.specs))
    assert source.data[0].shape == written.shape and str(source.zarr.path).endswith("volume.zarr")
