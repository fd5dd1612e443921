"""The device path of overlap-tile prediction (cut, normalise, turn and stitch on the device), run on the CPU:
it predicts what the host path predicts."""

import dataclasses

import numpy as np
import pytest
import torch
from unet_pipeline.inference.overlap_tile import TilePredictor, mirrored_reader
from unet_pipeline.models.unet import UNetConfig, build_model


class CentreCrop(torch.nn.Module):
    """A stand-in network whose output depends on each pixel alone: the centre crop of its input as two logits.
    Batch composition cannot change its logits; the softmax of them can differ by one rounding (1e-7) where a
    pixel falls in a vector's lanes on one path and in the scalar tail of the loop on the other (AVX-512 CPUs),
    so the paths agree to 1e-6: a tile misplaced by one pixel on the random section changes values by 1e-4 and more."""

    def __init__(self, margin: int):
        super().__init__()
        self.margin = margin

    def forward(self, inputs):
        centre = inputs[
            :, :, self.margin : inputs.shape[-2] - self.margin, self.margin : inputs.shape[-1] - self.margin
        ]
        return torch.cat([-centre, centre * 2.0], dim=1)


def predictors(model, geometry, input_size, **options):
    host = TilePredictor(model, geometry, input_size, {"mean": 0.4, "std": 0.3}, torch.device("cpu"), **options)
    return host, dataclasses.replace(host, on_device=True)


SECTION = np.random.default_rng(0).integers(0, 256, (70, 113), dtype=np.uint8)
REGIONS = [(0, 70, 0, 113), (8, 61, 16, 77), (0, 1, 0, 113)]  # whole, inner, one row


@pytest.mark.parametrize("tta", [False, True])
@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_the_device_path_stitches_exactly_as_the_host_path(tta, batch_size):
    geometry = UNetConfig(levels=3, base_channels=4).geometry
    margin = geometry.margin(92)
    host, device = predictors(CentreCrop(margin).eval(), geometry, 92, batch_size=batch_size, tta=tta)
    assert not host.stitches_on_device and device.stitches_on_device
    read = mirrored_reader(SECTION)
    for region in REGIONS:
        expected = host.region(read, region)
        found = device.region(read, region)
        assert found.shape == expected.shape == (region[1] - region[0], region[3] - region[2])
        np.testing.assert_allclose(found, expected, atol=1e-6, rtol=0, err_msg=str(region))


@pytest.mark.parametrize("tta", [False, True])
def test_a_real_network_predicts_on_the_device_path_what_it_predicts_on_the_host(tta):
    torch.manual_seed(0)
    config = UNetConfig(levels=3, base_channels=4)
    host, device = predictors(build_model(config).eval(), config.geometry, 92, batch_size=8, tta=tta)
    read = mirrored_reader(SECTION)
    for region in REGIONS:
        np.testing.assert_allclose(device.region(read, region), host.region(read, region), atol=1e-5, rtol=0)


def test_padded_networks_blend_on_the_device_as_on_the_host():
    """The blend sums overlapping tiles in another order on the device (fold), hence a tolerance of rounding."""
    config = UNetConfig(architecture="ternausnet", base_channels=8)
    host, device = predictors(CentreCrop(0).eval(), config.geometry, 64, batch_size=4, tta=True)
    read = mirrored_reader(SECTION)
    for region in REGIONS:
        np.testing.assert_allclose(device.region(read, region), host.region(read, region), atol=1e-6, rtol=0)
    torch.manual_seed(0)
    host, device = predictors(build_model(config).eval(), config.geometry, 64, batch_size=4)
    np.testing.assert_allclose(device.region(read, REGIONS[1]), host.region(read, REGIONS[1]), atol=1e-5, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on a GPU machine; CI has none)")
def test_a_gpu_predicts_on_the_device_path_what_the_cpu_predicts_on_the_host():
    """The path a GPU takes by itself (pinned window, tiles and stitching on the device), against the CPU's host
    path; TF32 convolutions round differently, hence the tolerance."""
    torch.manual_seed(0)
    config = UNetConfig(levels=3, base_channels=4)
    network = build_model(config).eval()
    host, _ = predictors(network, config.geometry, 92, batch_size=8, tta=True)
    gpu_network = build_model(config).eval()
    gpu_network.load_state_dict(network.state_dict())
    gpu_network = gpu_network.to("cuda").to(memory_format=torch.channels_last)
    on_gpu = dataclasses.replace(host, model=gpu_network, device=torch.device("cuda"))
    assert on_gpu.stitches_on_device
    read = mirrored_reader(SECTION)
    for region in REGIONS:
        np.testing.assert_allclose(on_gpu.region(read, region), host.region(read, region), atol=1e-2, rtol=0)
