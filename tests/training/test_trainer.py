"""The training loop driven with in-memory batches: no Zarr set, no volume store, no snakemake."""

import itertools
import math

import pytest
import torch
from unet_pipeline.core.errors import PipelineError
from unet_pipeline.models.unet import UNetConfig
from unet_pipeline.training.curve import curve_row, fine_tuning_record, validation_rank, validation_score
from unet_pipeline.training.optimisation import make_optimizer
from unet_pipeline.training.options import TrainingOptions
from unet_pipeline.training.trainer import Trainer, TrainingParts, prepared_model

CONFIG = UNetConfig(levels=2, base_channels=4, dropout=0.0)
TILE, OUT = 28, 12  # a legal tile of the 2-level network


def in_memory_batches(poison_step=None):
    """Step -> (inputs, labels, weights): the same batch for a step whatever the call, NaN inputs at ``poison_step``."""

    def batch(step):
        generator = torch.Generator().manual_seed(step)
        inputs = torch.rand(2, 1, TILE, TILE, generator=generator)
        labels = (inputs[:, 0, 8:-8, 8:-8] > 0.5).long()
        if step == poison_step:
            inputs = torch.full_like(inputs, float("nan"))
        return inputs, labels, torch.ones(labels.shape)

    return batch


def trainer(folder, iterations, validate=None, poison_step=None):
    options = TrainingOptions(
        iterations=iterations, batch_size=2, optimizer="adam", learning_rate=0.01, log_every=2, validate_every=4
    )
    torch.manual_seed(0)
    model = prepared_model(CONFIG, options, torch.device("cpu"))
    parts = TrainingParts(model, make_optimizer(model, options), in_memory_batches(poison_step), torch.device("cpu"))
    parts.validate = validate
    return Trainer(parts, options, folder, signature="in memory")


def test_the_loop_logs_validates_and_checkpoints_on_the_parts_it_is_given(tmp_path):
    seen = []
    run = trainer(
        tmp_path, 8, validate=lambda model: seen.append(model.training) or {"misclassified": 0.1, "v_rand": 0.9}
    )
    run.run()
    assert [row["step"] for row in run.rows if row["split"] == "train"] == [2, 4, 6, 8]
    assert [row["step"] for row in run.rows if row["split"] == "validation"] == [4, 8]
    assert seen == [False, False], "validation sees the model in eval mode"
    assert run.best["step"] == 4 and run.best_path.exists() and run.last_path.exists()


def test_a_resumed_in_memory_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    straight = trainer(tmp_path / "straight", 8)
    straight.run()
    first = trainer(tmp_path / "resumed", 4)
    first.run()
    resumed = trainer(tmp_path / "resumed", 8)
    resumed.load_checkpoint()
    assert resumed.step == 4
    resumed.run()
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    seconds = [row["seconds"] for row in resumed.rows if row["split"] == "train"]
    assert seconds[:2] == [row["seconds"] for row in first.rows if row["split"] == "train"]
    assert all(later > earlier > 0 for earlier, later in itertools.pairwise(seconds)), "the resumed run carries on"


def test_a_non_finite_loss_stops_the_loop_naming_its_step(tmp_path):
    with pytest.raises(PipelineError, match=r"training diverged at step 5 \(loss nan\)"):
        trainer(tmp_path, 8, poison_step=5).run()


def test_fine_tuning_scores_the_starting_weights_first_and_keeps_them_when_nothing_beats_them(tmp_path):
    scores = iter([0.95, 0.90, 0.93])  # the start, step 4, step 8
    run = trainer(tmp_path, 8, validate=lambda model: {"misclassified": 0.1, "v_rand": next(scores)})
    run.parts.validate_at_start = True
    start = {key: value.clone() for key, value in run.model.state_dict().items()}
    run.run()
    assert [row["step"] for row in run.rows if row["split"] == "validation"] == [0, 4, 8]
    assert run.best["step"] == 0
    run.load_best()
    assert all(torch.equal(value, start[key]) for key, value in run.model.state_dict().items())
    assert fine_tuning_record(run.rows) == {
        "zero_shot_v_rand": 0.95,
        "best_v_rand": 0.95,
        "best_step": 0,
        "plateau_step": 0,
        "gain_v_rand": 0.0,
        "verdict": "no gain",
        "next_step": "train from scratch, or fine-tune with other settings",
    }


def test_the_best_checkpoint_is_chosen_at_the_best_threshold_not_at_one_half(tmp_path):
    """V_rand at 0.5 jumps between checkpoints whose best-threshold V_rand barely moves (issue 37): the best
    threshold ranks, as the evaluation will choose its threshold; 0.5 only where there is no best-threshold score."""
    scores = iter([(0.94, 0.959), (0.92, 0.961)])  # (at 0.5, at the best threshold): step 4, step 8
    run = trainer(
        tmp_path, 8, validate=lambda model: dict(zip(("v_rand", "v_rand_best"), next(scores))) | {"misclassified": 0.1}
    )
    run.run()
    assert run.best["step"] == 8
    old = {"v_rand": 0.94, "misclassified": 0.1}  # a checkpoint saved before v_rand_best was recorded
    assert validation_rank(old) == (0.94, -0.1) and validation_score(old | {"v_rand_best": math.nan}) == 0.94


def test_the_fine_tuning_record_names_where_the_validation_curve_levelled_off():
    rows = [
        curve_row("validation", step, v_rand=v, misclassified=0.1)
        for step, v in [(0, 0.91), (500, 0.95), (1000, 0.958), (1500, 0.959)]
    ]
    rows.insert(1, curve_row("train", 50, loss=0.3))
    record = fine_tuning_record(rows)
    assert record["best_step"] == 1500 and record["plateau_step"] == 1000
    assert record["gain_v_rand"] == pytest.approx(0.049)
    assert (record["verdict"], record["next_step"]) == ("gained", None), "the last step gained under the tolerance"
    assert fine_tuning_record(rows[1:]) is None, "no validation of the starting weights: not fine-tuning"


@pytest.mark.parametrize(
    "scores, verdict, advice",
    [
        ([0.91, 0.93, 0.95, 0.96], "still rising", "train longer"),
        ([0.95, 0.951, 0.9505, 0.9515], "within noise", "train from scratch"),
        ([0.95, 0.94, 0.945], "no gain", "train from scratch"),
        ([0.91, 0.96, 0.959, 0.9605], "gained", None),
    ],
)
def test_the_fine_tuning_record_says_when_it_did_not_pay_and_what_to_do(scores, verdict, advice):
    rows = [curve_row("validation", 500 * i, v_rand=v, misclassified=0.1) for i, v in enumerate(scores)]
    record = fine_tuning_record(rows)
    assert record["verdict"] == verdict
    assert (record["next_step"] or "").startswith(advice or "") and (advice is None) == (record["next_step"] is None)


def test_fine_tuning_refuses_a_base_with_another_norm(tmp_path):
    """The norm layers are part of the network: a base with batch norm does not start a network without."""
    from unet_pipeline.models.unet import UNet, save_model
    from unet_pipeline.training.checkpoints import initial_weights

    base = UNetConfig(levels=2, base_channels=4, norm="batch")
    model = {"architecture": "unet", "levels": 2, "base_channels": 4, "padded": False, "norm": "batch"}
    save_model(UNet(base), tmp_path / "base.pt", {"model": model, "input_size": TILE, "normalisation": {}})
    with pytest.raises(PipelineError, match=r"norm batch, tiles 28\) is not the one trained here \(.*norm none"):
        initial_weights(tmp_path / "base.pt", UNetConfig(levels=2, base_channels=4), TILE)
    state, _ = initial_weights(tmp_path / "base.pt", base, TILE)
    assert "encoder.0.1.running_mean" in state
