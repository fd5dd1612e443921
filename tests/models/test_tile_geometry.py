import pytest
from unet_pipeline.models.tile_geometry import TileGeometry, TileSizeError


def test_paper_geometry():
    geometry = TileGeometry(levels=5, padded=False)
    assert geometry.output_size(572) == 388
    assert geometry.margin(572) == 92
    assert geometry.input_size_for_output(388) == 572
    assert geometry.legal_input_sizes(550, 600) == [556, 572, 588]


def test_illegal_size_suggests_the_nearest_legal_ones():
    with pytest.raises(
        TileSizeError, match="input tile size 570 is illegal for an unpadded U-Net with 5 levels.*556 or 572"
    ):
        TileGeometry(levels=5, padded=False).output_size(570)
    with pytest.raises(TileSizeError, match="nearest legal sizes: 92$"):
        TileGeometry(levels=4, padded=False).output_size(8)


def test_padded_geometry_keeps_the_size():
    geometry = TileGeometry(levels=5, padded=True)
    assert geometry.output_size(512) == 512 and geometry.margin(512) == 0
    assert geometry.legal_input_sizes(1, 64) == [16, 32, 48, 64]


def test_tile_step_is_a_multiple_of_the_pooling_period():
    assert TileGeometry(levels=5, padded=False).tile_step(572) == 384
    assert TileGeometry(levels=4, padded=False).tile_step(188) == 96
    assert TileGeometry(levels=5, padded=True).tile_step(512) == 512
