"""Training batches: the device-resident and the prefetched path draw what the loop always drew, bit for bit."""

import numpy as np
import pytest
import torch
from unet_pipeline.core.errors import PipelineError
from unet_pipeline.inference.overlap_tile import normalise
from unet_pipeline.training import distributed
from unet_pipeline.training.batches import (
    DeviceBatches,
    Joined,
    PrefetchedBatches,
    SetNormalisation,
    batch_plan,
    batch_source,
    sample_chances,
)
from unet_pipeline.training.options import TrainingOptions
from unet_pipeline.training.trainer import Trainer, TrainingParts

NORMALISATION = {"mean": 0.4932, "std": 0.1731}


def reference_batch(arrays, options, step, world=distributed.SINGLE):
    """The batch as the training loop drew it before batches.py (NumPy in the training thread), normalised."""
    rng = np.random.default_rng([options.seed, step])
    indices = rng.integers(len(arrays[0]), size=options.batch_size)
    turns, flips = rng.integers(4, size=len(indices)), rng.random(len(indices)) < 0.5
    part = slice(world.rank * len(indices) // world.size, (world.rank + 1) * len(indices) // world.size)
    inputs, labels, weights = [np.stack([np.asarray(array[int(i)]) for i in indices[part]]) for array in arrays]
    if options.online_augmentation:
        for row, (turn, flip) in enumerate(zip(turns[part], flips[part])):
            for array in (inputs, labels, weights):
                array[row] = np.rot90(array[row][:, ::-1] if flip else array[row], turn)
    return normalise(inputs, NORMALISATION)[:, None], labels, weights


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(5)
    inputs = rng.integers(0, 256, (9, 36, 36)).astype(np.uint8)
    labels = rng.integers(0, 2, (9, 20, 20)).astype(np.uint8)
    weights = rng.random((9, 20, 20), dtype=np.float32) * 11
    return inputs, labels, weights


def assert_bitwise(batch, expected):
    for got, want in zip(batch, expected):
        got = got.numpy()
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.array_equal(got.view(np.uint8), np.ascontiguousarray(want).view(np.uint8))


@pytest.mark.parametrize("online", [True, False])
@pytest.mark.parametrize("source", [DeviceBatches, PrefetchedBatches])
def test_both_paths_draw_the_old_batches_bit_for_bit(arrays, source, online):
    options = TrainingOptions(iterations=50, batch_size=4, seed=3, online_augmentation=online)
    cpu = torch.device("cpu")
    world = distributed.SINGLE
    batches = source(arrays, options, NORMALISATION, cpu, world)
    try:
        for step in [*range(12), 30, 31, 5]:  # out of order: a resume restarts the read-ahead
            assert_bitwise(batches(step), reference_batch(arrays, options, step))
    finally:
        batches.close()


@pytest.mark.parametrize("source", [DeviceBatches, PrefetchedBatches])
def test_border_sampling_draws_in_proportion_to_the_weight_sums_on_both_paths(arrays, source):
    """With share s a sample's chance is (1 - s) / n + s * its weight sum / all weights' sum: over 4000 draws
    the frequencies follow, and both paths (device and prefetched) draw the same batches."""
    inputs, labels, weights = arrays
    heavy = weights.copy()
    heavy[:8] *= 0.1  # sample 8 holds ten times the weight of each other sample
    options = TrainingOptions(iterations=10, batch_size=4, seed=2, border_sampling=0.5)
    chances = sample_chances(heavy, 0.5)
    sums = heavy.astype(np.float64).sum(axis=(1, 2))
    assert chances == pytest.approx(0.5 / 9 + 0.5 * sums / sums.sum(), abs=1e-12)
    counts = np.bincount(
        np.concatenate([batch_plan(9, options, step, chances=chances).indices for step in range(1000)]), minlength=9
    )
    assert counts.sum() == 4000 and abs(counts[8] / 4000 - chances[8]) < 0.02, (counts, chances)
    assert chances[8] > 3.5 * chances[0]
    batches = source((inputs, labels, heavy), options, NORMALISATION, torch.device("cpu"), distributed.SINGLE)
    try:
        drawn = [batches(step) for step in (0, 1, 7)]
    finally:
        batches.close()
    for step, batch in zip((0, 1, 7), drawn):
        plan = batch_plan(9, options, step, chances=chances)
        turned = [
            np.rot90(heavy[i][:, ::-1] if f else heavy[i], t) for i, t, f in zip(plan.indices, plan.turns, plan.flips)
        ]
        assert np.array_equal(batch[2].numpy(), np.stack(turned))


def test_border_sampling_zero_is_the_uniform_draw_and_bad_weights_are_refused(arrays):
    options = TrainingOptions(iterations=10, batch_size=4, seed=2)
    assert sample_chances(arrays[2], 0.0) is None and options.border_sampling == 0
    with pytest.raises(PipelineError, match="1 samples are not finite"):
        sample_chances(np.where(np.arange(9)[:, None, None] == 3, np.nan, arrays[2]), 0.3)
    with pytest.raises(PipelineError, match="the sum is 0.0"):
        sample_chances(np.zeros_like(arrays[2]), 1.0)


def test_each_rank_draws_its_part_of_the_batch(arrays):
    options = TrainingOptions(iterations=10, batch_size=4, seed=1)
    for rank in range(2):
        world = distributed.World(rank=rank, size=2)
        batches = DeviceBatches(arrays, options, NORMALISATION, torch.device("cpu"), world)
        assert_bitwise(batches(7), reference_batch(arrays, options, 7, world))
        assert len(batch_plan(9, options, 7, world).indices) == 2


def test_a_set_over_the_device_share_is_prefetched(arrays, monkeypatch):
    options = TrainingOptions(iterations=10)
    cpu = torch.device("cpu")
    monkeypatch.setattr("unet_pipeline.training.batches.free_memory", lambda device: 10**12)
    assert isinstance(batch_source(arrays, options, NORMALISATION, cpu, distributed.SINGLE), DeviceBatches)
    monkeypatch.setattr("unet_pipeline.training.batches.free_memory", lambda device: 1000)
    source = batch_source(arrays, options, NORMALISATION, cpu, distributed.SINGLE)
    assert isinstance(source, PrefetchedBatches)
    source.close()


@pytest.mark.parametrize("source", [DeviceBatches, PrefetchedBatches])
def test_joined_sets_are_each_normalised_by_their_own_dataset(arrays, source):
    """Two sets end to end: sample i of the second is row 9 + i, and its tile is scaled by its own set's
    mean and std, bit for bit as ``normalise`` scales it."""
    rng = np.random.default_rng(8)
    second = (
        rng.integers(0, 256, (4, 36, 36)).astype(np.uint8),
        rng.integers(0, 2, (4, 20, 20)).astype(np.uint8),
        rng.random((4, 20, 20), dtype=np.float32),
    )
    joined = [Joined(pair) for pair in zip(arrays, second)]
    assert joined[0].shape == (13, 36, 36) and joined[0].nbytes == arrays[0].nbytes + second[0].nbytes
    np.testing.assert_array_equal(joined[1][:], np.concatenate([arrays[1], second[1]]))
    np.testing.assert_array_equal(joined[2][10], second[2][1])
    inverted = {"mean": 1 - NORMALISATION["mean"], "std": -NORMALISATION["std"]}
    per_set = SetNormalisation([NORMALISATION, inverted], offsets=(0, 9))
    options = TrainingOptions(iterations=10, batch_size=8, seed=4, online_augmentation=False)
    batches = source(joined, options, per_set, torch.device("cpu"), distributed.SINGLE)
    try:
        inputs, labels, _ = batches(2)
    finally:
        batches.close()
    plan = batch_plan(13, options, 2)
    assert {index >= 9 for index in plan.indices.tolist()} == {False, True}, "the batch must mix the sets"
    for row, index in enumerate(plan.indices.tolist()):
        tile, norm = (arrays[0][index], NORMALISATION) if index < 9 else (second[0][index - 9], inverted)
        want = normalise(tile[None], norm)[0]
        assert np.array_equal(inputs[row, 0].numpy().view(np.uint8), want.view(np.uint8))
        np.testing.assert_array_equal(labels[row].numpy(), joined[1][index])


class Crop(torch.nn.Module):
    """Two logits per output pixel from the input's centre: a network-shaped module that trains in microseconds."""

    def __init__(self, margin: int):
        super().__init__()
        self.margin = margin
        self.mix = torch.nn.Conv2d(1, 2, 1)

    def forward(self, x):
        m = self.margin
        return self.mix(x[:, :, m:-m, m:-m])


def trainer_on(arrays, tmp_path, options, poisoned_step=None):
    """A Trainer given its parts in memory; weights turn NaN from ``poisoned_step`` on."""
    source = DeviceBatches(arrays, options, NORMALISATION, torch.device("cpu"))

    def batches(step):
        inputs, labels, weights = source(step)
        return (
            inputs,
            labels,
            weights * float("nan") if poisoned_step is not None and step >= poisoned_step else weights,
        )

    torch.manual_seed(0)
    model = Crop(8)
    parts = TrainingParts(model, torch.optim.SGD(model.parameters(), lr=0.01), batches, torch.device("cpu"))
    return Trainer(parts, options, tmp_path / "checkpoints", "test")


def test_the_loop_checks_losses_at_log_steps_and_names_the_step(arrays, tmp_path):
    options = TrainingOptions(iterations=20, log_every=5, validate_every=10)
    trainer = trainer_on(arrays, tmp_path, options, poisoned_step=7)
    with pytest.raises(PipelineError, match=r"training diverged at step 7 \(loss nan\); lower the learning rate"):
        trainer.run()
    assert trainer.step == 10 and not trainer.last_path.exists(), "diverged weights are never checkpointed"

    options = TrainingOptions(iterations=20, log_every=50, validate_every=4)  # a validation step between logs
    with pytest.raises(PipelineError, match="training diverged at step 2"):
        trainer_on(arrays, tmp_path / "between", options, poisoned_step=2).run()


def test_the_loop_logs_the_mean_loss_of_each_window(arrays, tmp_path):
    options = TrainingOptions(iterations=6, log_every=3, validate_every=6, optimizer="sgd", momentum=0.0)
    trainer = trainer_on(arrays, tmp_path, options)
    trainer.run()
    replay = trainer_on(arrays, tmp_path / "replay", options)
    losses = [replay.train_step().item() for _ in range(6)]
    rows = [row for row in trainer.rows if row["split"] == "train"]
    assert [row["step"] for row in rows] == [3, 6]
    assert [row["loss"] for row in rows] == pytest.approx([np.mean(losses[:3]), np.mean(losses[3:])], rel=1e-12)


def test_batches_read_ahead_from_zarr_equal_the_old_ones(arrays, tmp_path):
    """A set too large for the device stays in Zarr (one sample per chunk, as the augment stage writes it)."""
    import zarr

    group = zarr.open_group(str(tmp_path / "augmented.zarr"), mode="w", zarr_format=3)
    stored = tuple(
        group.create_array(name, data=array, chunks=(1, *array.shape[1:]))
        for name, array in zip(("inputs", "labels", "weights"), arrays)
    )
    options = TrainingOptions(iterations=20, batch_size=3, seed=7)
    batches = PrefetchedBatches(stored, options, NORMALISATION, torch.device("cpu"), distributed.SINGLE, threads=2)
    try:
        for step in range(8):
            assert_bitwise(batches(step), reference_batch(arrays, options, step))
    finally:
        batches.close()
