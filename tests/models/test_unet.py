"""The network of the paper: size, geometry, initialisation, saving and loading."""

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from helpers import shipped_config
from unet_pipeline.core.errors import PipelineError
from unet_pipeline.inference.overlap_tile import TilePredictor, mirrored_reader
from unet_pipeline.models.unet import (
    UNet,
    UNetConfig,
    build_model,
    center_crop,
    count_parameters,
    load_model,
    save_model,
)
from unet_pipeline.training.loss import weighted_cross_entropy


@pytest.fixture(scope="module")
def paper_net():
    torch.manual_seed(0)
    return UNet(UNetConfig())


@pytest.mark.parametrize(
    "preset, parameters",
    [("laptop", 483_170), ("ternausnet", 22_926_274)],
)
def test_parameter_counts_of_the_shipped_presets(preset, parameters):
    """The counts config/README.md states; each network built from the preset of config/config.yaml."""
    model = shipped_config()["presets"][preset]["model"]
    with torch.device("meta"):
        network = build_model(UNetConfig(**{**model, "encoder_weights": None}))
    assert count_parameters(network) == parameters


def test_paper_network_size_and_geometry(paper_net):
    assert count_parameters(paper_net) == 31_030_658
    convolutions = [m for m in paper_net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert len(convolutions) == 23
    assert all(m.padding == (0, 0) for m in convolutions if isinstance(m, torch.nn.Conv2d))
    with torch.device("meta"):
        shape_net = UNet(UNetConfig())
        assert shape_net(torch.empty(1, 1, 572, 572)).shape == (1, 2, 388, 388)


@pytest.mark.parametrize("levels, base, padded, size", [(3, 4, False, 92), (4, 8, False, 188), (4, 8, True, 64)])
def test_configurable_networks_follow_their_tile_geometry(levels, base, padded, size):
    config = UNetConfig(levels=levels, base_channels=base, padded=padded)
    out = config.geometry.output_size(size)
    assert UNet(config).eval()(torch.zeros(1, 1, size, size)).shape == (1, 2, out, out)


@pytest.mark.parametrize(
    "norm, layer",
    [("batch", torch.nn.BatchNorm2d), ("instance", torch.nn.InstanceNorm2d), ("group", torch.nn.GroupNorm)],
)
def test_a_norm_follows_every_3x3_convolution(norm, layer):
    """Conv, norm, ReLU in every block; group norm has 8 channels per group (1 group below 8 channels)."""
    net = UNet(UNetConfig(levels=3, base_channels=4, norm=norm))
    convolutions = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    norms = [m for m in net.modules() if isinstance(m, layer)]
    assert len(norms) == len(convolutions) == 10
    assert [m.num_channels if norm == "group" else m.num_features for m in norms] == [
        c.out_channels for c in convolutions
    ]
    if norm == "group":
        assert [m.num_groups for m in norms][:6] == [1, 1, 1, 1, 2, 2]
    for block in [*net.encoder, net.bottom, *net.decoder]:
        assert [type(m) for m in block] == [torch.nn.Conv2d, layer, torch.nn.ReLU] * 2
    assert net.eval()(torch.zeros(2, 1, 92, 92)).shape == (2, 2, 52, 52)


def test_with_batch_norm_the_prediction_does_not_depend_on_the_tile():
    """Batch norm predicts with its running statistics, so the overlap-tile output is the same for any tile (the
    tile choice may pick any); instance and group norm normalise per tile, so their prediction keeps the training
    tile."""
    from unet_pipeline.inference.tile_choice import candidates

    torch.manual_seed(2)
    net = UNet(UNetConfig(levels=3, base_channels=4, norm="batch"))
    for _ in range(3):  # running statistics away from their initial (0, 1)
        net(torch.rand(2, 1, 92, 92) * 3)
    net.eval()
    section = np.random.default_rng(1).integers(0, 256, (130, 150), dtype=np.uint8)
    norm = {"mean": 0.5, "std": 0.25}
    small, large = (
        TilePredictor(net, net.config.geometry, size, norm, torch.device("cpu")).section(section) for size in (92, 140)
    )
    assert np.abs(small - large).max() <= 1e-5
    assert len(candidates(net.config.geometry, 92, (512, 512))) > 1
    for norm in ("instance", "group"):
        geometry = UNetConfig(levels=3, base_channels=4, norm=norm).geometry
        assert geometry.per_tile_statistics and candidates(geometry, 92, (512, 512)) == [92]


def test_validation_tiles_step_by_256_within_the_section_and_never_below_the_training_tile():
    from unet_pipeline.inference.tile_choice import validation_size

    laptop = UNetConfig(levels=4, base_channels=16, norm="batch").geometry
    sizes = {section: validation_size(laptop, 188, section) for section in ((512, 512), (768, 1024), (128, 128))}
    assert sizes == {(512, 512): 348, (768, 1024): 348, (128, 128): 220}
    assert [laptop.tile_step(size) for size in sizes.values()] == [256, 256, 128]
    assert validation_size(laptop, 188, (90, 100)) == 188, "a section smaller than a larger tile's step"
    assert validation_size(UNetConfig(levels=5).geometry, 572, (512, 512)) == 572, "the paper's step is 384"
    for norm in ("instance", "group"):  # per-tile statistics: the output depends on the tile
        assert validation_size(UNetConfig(levels=4, norm=norm).geometry, 188, (512, 512)) == 188
    assert validation_size(UNetConfig(levels=4, padded=True).geometry, 192, (512, 512)) == 192


def test_without_a_norm_the_weights_keep_the_papers_names():
    """norm: none adds no layer, so models saved before the option existed load (their names pinned here)."""
    names = list(UNet(UNetConfig(levels=2, base_channels=2)).state_dict())
    assert names[:4] == ["encoder.0.0.weight", "encoder.0.0.bias", "encoder.0.2.weight", "encoder.0.2.bias"]
    with pytest.raises(PipelineError, match="unknown norm 'layer'"):
        UNet(UNetConfig(levels=2, base_channels=2, norm="layer"))


def test_a_model_saved_without_the_norm_key_loads_as_none(tmp_path):
    config = UNetConfig(levels=3, base_channels=4)
    metadata = tiny_metadata(config)
    assert "norm" not in metadata["model"]  # as written before the option existed
    save_model(UNet(config), tmp_path / "model.pt", metadata)
    assert load_model(tmp_path / "model.pt")[0].config.norm == "none"


def expected_fan_in(module):
    """Inputs of one unit, written out per layer type of the paper's network."""
    if isinstance(module, torch.nn.ConvTranspose2d):
        return module.in_channels  # 2x2 stride 2: one input position per channel
    return module.in_channels * module.kernel_size[0] * module.kernel_size[1]


def test_he_initialisation(paper_net):
    for module in paper_net.modules():
        if not isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            continue
        weights = module.weight.detach()
        expected = math.sqrt(2.0 / expected_fan_in(module))
        tolerance = 0.05 if weights.numel() > 10_000 else 0.35
        assert weights.std().item() == pytest.approx(expected, rel=tolerance)
        assert abs(weights.mean().item()) < 4 * expected / math.sqrt(weights.numel())
        assert not module.bias.detach().any()


def test_lecun_uniform_initialisation():
    torch.manual_seed(0)
    network = UNet(UNetConfig(levels=4, base_channels=16, init="lecun_uniform"))
    for module in network.modules():
        if not isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            continue
        weights = module.weight.detach()
        bound = math.sqrt(3.0 / expected_fan_in(module))
        assert weights.abs().max().item() <= bound
        if weights.numel() > 10_000:  # uniform on [-b, b]: std b / sqrt(3), values near both ends
            assert weights.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
            assert weights.abs().max().item() > 0.99 * bound
        assert not module.bias.detach().any()
    with pytest.raises(PipelineError, match="unknown initialisation 'xavier'"):
        UNet(UNetConfig(levels=3, base_channels=4, init="xavier"))


def test_weighted_loss_by_hand():
    logits = torch.tensor([[[[0.0, 0.0]], [[math.log(3.0), 0.0]]]])  # (1, 2 classes, 1, 2)
    labels = torch.tensor([[[1, 0]]])
    weights = torch.tensor([[[2.0, 0.5]]])
    # pixel 1: softmax (1/4, 3/4), label 1 -> -log(3/4); pixel 2: (1/2, 1/2), label 0 -> log 2
    expected = (2.0 * -math.log(0.75) + 0.5 * math.log(2.0)) / 2
    assert weighted_cross_entropy(logits, labels, weights).item() == pytest.approx(expected, rel=1e-6)


def test_dropout_sits_at_the_end_of_the_contracting_path():
    net = UNet(UNetConfig(levels=3, base_channels=4, dropout=0.5)).train()
    x = torch.randn(1, 1, 92, 92)
    assert not torch.equal(net(x), net(x)), "training mode drops"
    net.eval()
    assert torch.equal(net(x), net(x))


@pytest.mark.parametrize("excess", [0, 1, 2, 7])
def test_the_skip_crop_keeps_channels_last_in_its_gradient(excess):
    """The crop is slicing's values, and its gradient (from the concatenation's, a channel slice) stays
    channels_last, which the ReLU backward before it needs to run fast on the CPU (center_crop)."""
    leaf = torch.randn(2, 3, 20 + excess, 20 + excess).to(memory_format=torch.channels_last).requires_grad_()
    skip = leaf.clone()  # a layer's output: the leaf's .grad would be copied into the leaf's layout
    gradients = []
    skip.register_hook(gradients.append)
    upsampled = torch.randn(2, 3, 20, 20).to(memory_format=torch.channels_last)
    cropped = center_crop(skip, 20, 20)
    top = excess // 2
    assert torch.equal(cropped, skip[..., top : top + 20, top : top + 20])
    joined = torch.cat([cropped, upsampled], dim=1)
    joined.backward(torch.ones_like(joined).to(memory_format=torch.channels_last))
    (gradient,) = gradients
    assert gradient.is_contiguous(memory_format=torch.channels_last)
    assert gradient.sum() == 2 * 3 * 20 * 20
    if excess:
        assert gradient[..., -1].sum() == 0, "the odd pixel is cropped after, as the slicing did"


def tiny_metadata(config):
    return {
        "model": {
            "architecture": config.architecture,
            "in_channels": 1,
            "classes": 2,
            "levels": config.levels,
            "base_channels": config.base_channels,
            "padded": config.padded,
            "dropout": config.dropout,
        }
    }


def test_save_and_load(tmp_path):
    config = UNetConfig(levels=3, base_channels=4)
    net = UNet(config).eval()
    save_model(net, tmp_path / "model.pt", tiny_metadata(config))
    loaded, metadata = load_model(tmp_path / "model.pt")
    x = torch.randn(2, 1, 108, 108)
    assert torch.equal(loaded(x), net(x)) and metadata["model"]["levels"] == 3


def test_load_model_errors(tmp_path):
    with pytest.raises(PipelineError, match=r"nothing\.pt: model file not found"):
        load_model(tmp_path / "nothing.pt")
    torch.save({"format": "something-else/9", "state_dict": {}}, tmp_path / "old.pt")
    with pytest.raises(PipelineError, match=r"old\.pt: model format 'something-else/9' is not 'unet-pipeline-model/1'"):
        load_model(tmp_path / "old.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(PipelineError, match=r"junk\.pt: not a readable model file"):
        load_model(tmp_path / "junk.pt")


@pytest.mark.parametrize("levels, input_size, shape", [(3, 92, (130, 151)), (4, 188, (200, 97)), (3, 92, (30, 20))])
def test_overlap_tile_equals_a_single_pass(levels, input_size, shape):
    torch.manual_seed(1)
    net = UNet(UNetConfig(levels=levels, base_channels=4)).eval()
    geometry = net.config.geometry
    section = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    normalisation = {"mean": 0.5, "std": 0.25}
    tiled = TilePredictor(net, geometry, input_size, normalisation, torch.device("cpu"), batch_size=3).section(section)
    whole_input = geometry.input_size_for_output(max(shape))
    margin = geometry.margin(whole_input)
    offsets = np.arange(-margin, whole_input - margin)
    whole_pass = TilePredictor(net, geometry, whole_input, normalisation, torch.device("cpu"))
    whole = whole_pass.tiles(mirrored_reader(section)(offsets, offsets)[None])[0]
    assert tiled.shape == shape
    assert np.abs(tiled - whole[: shape[0], : shape[1]]).max() <= 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on a GPU machine; CI has none)")
def test_a_gpu_predicts_what_the_cpu_predicts():
    # on CUDA the uint8 tiles are normalised on the device; float32 there means TF32 convolutions
    torch.manual_seed(3)
    net = UNet(UNetConfig(levels=3, base_channels=4)).eval()
    tiles = np.random.default_rng(2).integers(0, 256, (4, 92, 92), dtype=np.uint8)
    normalisation = {"mean": 0.5, "std": 0.25}
    on_cpu = TilePredictor(net, net.config.geometry, 92, normalisation, torch.device("cpu")).tiles(tiles)
    gpu_net = copy.deepcopy(net).to("cuda").to(memory_format=torch.channels_last)
    on_gpu = TilePredictor(gpu_net, net.config.geometry, 92, normalisation, torch.device("cuda")).tiles(tiles)
    assert on_gpu.shape == on_cpu.shape and np.abs(on_gpu - on_cpu).max() < 1e-2


def test_test_time_augmentation_averages_the_eight_dihedral_views():
    torch.manual_seed(2)
    net = UNet(UNetConfig(levels=3, base_channels=4)).eval()
    tile = np.random.default_rng(1).integers(0, 256, (1, 92, 92), dtype=np.uint8)
    normalisation = {"mean": 0.5, "std": 0.25}
    plain = TilePredictor(net, net.config.geometry, 92, normalisation, torch.device("cpu"))
    views = []
    for turns in range(4):
        for flip in (False, True):
            view = np.rot90(tile[0][:, ::-1] if flip else tile[0], turns).copy()
            out = plain.tiles(view[None])[0]
            out = np.rot90(out, -turns)
            views.append(out[:, ::-1] if flip else out)
    averaged = dataclasses.replace(plain, tta=True).tiles(tile)[0]
    np.testing.assert_allclose(averaged, np.mean(views, axis=0), atol=1e-6)
