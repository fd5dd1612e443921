"""Test-time augmentation is chosen per model on its validation sections: a network that is not equivariant to
the flips and rotations loses by averaging them and predicts without; one whose errors differ between views
gains and predicts with; ``prediction.tta: auto`` follows the choice the model records."""

import numpy as np
import pytest
import tifffile
import torch
from unet_pipeline.data import volume_store
from unet_pipeline.inference.overlap_tile import TilePredictor
from unet_pipeline.models.tile_geometry import TileGeometry
from unet_pipeline.stages.ingest import ingest
from unet_pipeline.stages.predict import resolved_tta
from unet_pipeline.training.validation import tta_choice

SHIFT = 3


class Pointwise(torch.nn.Module):
    """Logits from each pixel's gray value, after ``shift`` pixels along x and a fixed pattern of ``noise``
    in the network's own frame (what a view sees is not what another view sees)."""

    def __init__(self, shift=0, noise=0.0):
        super().__init__()
        self.shift, self.noise = shift, noise

    def forward(self, x):
        z = torch.roll(x, -self.shift, dims=-1) * 4.0
        if self.noise:
            generator = torch.Generator().manual_seed(0)
            z = z + self.noise * torch.randn(x.shape[-2:], generator=generator)
        return torch.cat([-z, z], dim=1)


def volume(isbi_dir, folder, shift=SHIFT):
    """ISBI labels as a stack whose image is the labels moved ``shift`` pixels along x: a microscope offset that
    a network can learn in one orientation only."""
    labels = tifffile.imread(isbi_dir / "train-labels.tif")[20:24, :96, :96]
    image = np.roll(labels, shift, axis=-1) // 2 + 64
    tifffile.imwrite(folder / "img.tif", image, photometric="minisblack")
    tifffile.imwrite(folder / "lab.tif", labels, photometric="minisblack")
    config = {"image": {"source": "i"}, "labels": {"source": "l"}, "sections": {"train": "0-1", "validation": "2-3"}}
    ingest("d", config, folder / "img.tif", folder / "lab.tif", folder / "volume.zarr")
    return volume_store.open_store(folder / "volume.zarr")


def predictor(model):
    return TilePredictor(model.eval(), TileGeometry(1, True), 48, {"mean": 0.5, "std": 0.25}, torch.device("cpu"))


def test_a_network_that_is_not_equivariant_predicts_without_tta(isbi_dir, tmp_path):
    choice = tta_choice(predictor(Pointwise(shift=SHIFT)), volume(isbi_dir, tmp_path), [2, 3])
    assert choice["v_rand"]["with"] < choice["v_rand"]["without"] - 0.01 and choice["chosen"] is False
    assert choice["sections"] == [2, 3]


def test_a_network_whose_views_err_differently_predicts_with_tta(isbi_dir, tmp_path):
    choice = tta_choice(predictor(Pointwise(noise=6.0)), volume(isbi_dir, tmp_path, shift=0), [2, 3])
    assert choice["v_rand"]["with"] > choice["v_rand"]["without"] + 0.01 and choice["chosen"] is True


def test_auto_follows_the_recorded_choice_and_a_setting_overrides_it():
    chose_off = {"training": {"tta": {"chosen": False}}}
    assert resolved_tta("auto", chose_off) is False and resolved_tta(True, chose_off) is True
    assert resolved_tta("auto", {"training": {"tta": {"chosen": True}}}) is True
    assert resolved_tta("auto", {"training": {}}) is True, "a model without a choice: TTA as before"
    assert resolved_tta(False, {}) is False


def test_tta_takes_true_false_or_auto():
    from unet_pipeline.core.errors import PipelineError
    from unet_pipeline.stages.predict import PredictionOptions

    assert PredictionOptions().tta == "auto"
    with pytest.raises(PipelineError, match="tta must be true, false or auto"):
        PredictionOptions(tta="yes")


def test_validation_reports_the_best_threshold_as_the_evaluation_chooses_it(isbi_dir, tmp_path):
    """``v_rand_best`` is the best of the per-threshold section means (``v_rand_by_threshold``), so never below
    V_rand at 0.5; on a network whose foreground probability is too low, it is well above."""
    from unet_pipeline.training.validation import v_rand_by_threshold, validate

    store = volume(isbi_dir, tmp_path, shift=0)

    class Dim(Pointwise):
        def forward(self, x):
            return super().forward(x) - torch.tensor([-5.0, 5.0]).view(1, 2, 1, 1)  # probabilities pushed down

    for network in (Pointwise(), Dim()):
        scores = validate(predictor(network), store, [2, 3])
        curve = v_rand_by_threshold(predictor(network), store, [2, 3])
        assert scores["v_rand_best"] == pytest.approx(max(curve.values()), abs=1e-12)
        assert scores["v_rand"] == pytest.approx(curve[0.5], abs=1e-12)
    assert scores["v_rand_best"] > scores["v_rand"] + 0.05
