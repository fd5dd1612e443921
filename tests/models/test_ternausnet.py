"""TernausNet: VGG11 encoder, padded geometry, encoder weights from a local state dict, blended tiles."""

import math

import numpy as np
import pytest
import torch
from helpers import vgg11_state_dict
from unet_pipeline.core.checksums import sha256_of_file
from unet_pipeline.core.errors import ChecksumError, PipelineError
from unet_pipeline.inference.overlap_tile import TilePredictor
from unet_pipeline.models.ternausnet import VGG11_CONVOLUTIONS
from unet_pipeline.models.tile_geometry import TileSizeError
from unet_pipeline.models.unet import UNetConfig, build_model

CONFIG = UNetConfig(architecture="ternausnet", base_channels=8)


def test_padded_geometry_divisible_by_32():
    network = build_model(CONFIG).eval()
    for size in (64, 96):
        assert network(torch.zeros(1, 1, size, size)).shape == (1, 2, size, size)
    with pytest.raises(TileSizeError, match="input tile size 70 is illegal for a padded U-Net with 6 levels.*64 or 96"):
        CONFIG.geometry.output_size(70)


def test_encoder_starts_from_vgg11_weights(tmp_path):
    state = vgg11_state_dict()
    torch.save(state, tmp_path / "vgg11.pth")
    network = build_model(
        UNetConfig(architecture="ternausnet", base_channels=8, encoder_weights=str(tmp_path / "vgg11.pth"))
    )
    first = network.encoder[0][0]
    torch.testing.assert_close(first.weight, state["features.0.weight"].sum(dim=1, keepdim=True))
    for block, (_, _, index) in list(zip(network.encoder, VGG11_CONVOLUTIONS))[1:]:
        assert torch.equal(block[0].weight, state[f"features.{index}.weight"])
        assert torch.equal(block[0].bias, state[f"features.{index}.bias"])


def test_ternausnet_random_initialisation_is_lecun_uniform():
    torch.manual_seed(0)
    network = build_model(UNetConfig(architecture="ternausnet", base_channels=8, init="lecun_uniform"))
    transposed = network.center[1]  # 3x3 stride-2 transposed convolution: 9 / 4 inputs per channel on average
    bound = math.sqrt(3.0 / (transposed.in_channels * 9 / 4))
    assert transposed.weight.abs().max().item() <= bound < 1.01 * transposed.weight.abs().max().item()
    conv = network.encoder[7][0]
    assert conv.weight.abs().max().item() <= math.sqrt(3.0 / (512 * 9))


def test_a_file_named_with_a_hash_prefix_is_verified(tmp_path):
    staged = tmp_path / "staged.pth"
    torch.save(vgg11_state_dict(), staged)
    right = tmp_path / f"vgg11-{sha256_of_file(staged)[:8]}.pth"
    staged.rename(right)
    build_model(UNetConfig(architecture="ternausnet", base_channels=8, encoder_weights=str(right)))
    wrong = tmp_path / "vgg11-8a719046.pth"  # torchvision's name, other bytes
    wrong.write_bytes(right.read_bytes())
    with pytest.raises(
        ChecksumError,
        match=r"vgg11-8a719046\.pth \(its name carries the sha256 prefix 8a719046\): sha256 prefix mismatch",
    ):
        build_model(UNetConfig(architecture="ternausnet", base_channels=8, encoder_weights=str(wrong)))


def test_bad_weight_files_are_clear_errors(tmp_path):
    with pytest.raises(PipelineError, match=r"missing\.pth: VGG11 weights file not found"):
        build_model(UNetConfig(architecture="ternausnet", encoder_weights=str(tmp_path / "missing.pth")))
    state = vgg11_state_dict()
    state["features.8.weight"] = torch.zeros(256, 128, 3, 3)
    torch.save(state, tmp_path / "other.pth")
    with pytest.raises(
        PipelineError,
        match=r"other\.pth: features\.8\.weight has shape \(256, 128, 3, 3\), VGG11 has \(256, 256, 3, 3\)",
    ):
        build_model(UNetConfig(architecture="ternausnet", encoder_weights=str(tmp_path / "other.pth")))
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "resnet.pth")
    with pytest.raises(PipelineError, match=r"resnet\.pth: no features\.0\.weight/bias; not a torchvision VGG11"):
        build_model(UNetConfig(architecture="ternausnet", encoder_weights=str(tmp_path / "resnet.pth")))
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(PipelineError, match=r"junk\.pth: not a readable PyTorch state dict"):
        build_model(UNetConfig(architecture="ternausnet", encoder_weights=str(tmp_path / "junk.pth")))


def test_blended_tiles_cover_the_region_with_weights_summing_to_one(monkeypatch):
    """With a network that predicts a constant, blending must return exactly that constant everywhere."""
    monkeypatch.setattr(TilePredictor, "tiles", lambda self, tiles: np.full(tiles.shape, 0.7, np.float32))
    section = np.zeros((150, 201), np.uint8)
    result = TilePredictor(None, CONFIG.geometry, 64, {"mean": 0, "std": 1}, torch.device("cpu")).section(section)
    assert result.shape == (150, 201)
    np.testing.assert_allclose(result, 0.7, rtol=1e-6)


def test_blended_prediction_is_close_to_a_whole_image_pass():
    """64-px tiles (zero padding at every tile edge) blend to within 0.01 of one pass over the whole section."""
    torch.manual_seed(0)
    config = UNetConfig(architecture="ternausnet", base_channels=8, init="lecun_uniform")
    network = build_model(config).eval()
    section = np.random.default_rng(0).integers(0, 256, (128, 128), dtype=np.uint8)
    normalisation = {"mean": 0.5, "std": 0.25}
    blended = TilePredictor(network, config.geometry, 64, normalisation, torch.device("cpu")).section(section)
    whole = TilePredictor(network, config.geometry, 128, normalisation, torch.device("cpu")).tiles(section[None])[0]
    inner = (slice(16, -16), slice(16, -16))
    assert whole[inner].std() > 0.1, "the network's output varies, so a constant could not pass"
    assert np.abs(blended[inner] - whole[inner]).max() < 0.01  # 0.0069 measured
