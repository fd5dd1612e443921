"""Tile sizes of a U-Net: which input sizes are legal and what output they give.

With unpadded 3x3 convolutions every convolution trims one pixel per side, and
each 2x2 max-pooling needs an even size, so only some input sizes work (the
paper's 572 -> 388). Padded networks keep the size but need inputs divisible by
2^(levels - 1). Pure Python: the augmentation and prediction stages use it
without importing torch.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from ..core.defaults import schema_defaults
from ..core.errors import PipelineError


class TileSizeError(PipelineError):
    """An input tile size the network cannot take."""


def tile_margin(input_size: int, output_size: int) -> int:
    """Context pixels per side that an input tile adds around its (centred) output tile."""
    return (input_size - output_size) // 2


@dataclass(frozen=True)
class TileGeometry:
    """Geometry of a U-Net with ``levels`` resolution levels (the paper: 5, i.e. 4 poolings), ``padded`` or
    not (a preset's model; ``geometry_of`` builds it from one)."""

    levels: int
    padded: bool
    convs_per_level: int = 2  # the network's structure (models.unet), not an option
    # instance or group norm: each tile is normalised by its own statistics, so the output depends on the tile
    per_tile_statistics: bool = False

    @property
    def trim(self) -> int:
        """Pixels one level's convolutions remove from the size (0 when padded)."""
        return 0 if self.padded else 2 * self.convs_per_level

    def _output_or_none(self, size: int) -> int | None:
        for _ in range(self.levels - 1):
            size -= self.trim
            if size <= 0 or size % 2:
                return None
            size //= 2
        size -= self.trim
        if size <= 0:
            return None
        for _ in range(self.levels - 1):
            size = 2 * size - self.trim
        return size if size > 0 else None

    def is_legal(self, input_size: int) -> bool:
        return self._output_or_none(input_size) is not None

    def legal_input_sizes(self, low: int, high: int) -> list[int]:
        return [size for size in range(max(low, 1), high + 1) if self.is_legal(size)]

    def nearest_legal(self, input_size: int) -> tuple[int | None, int | None]:
        """The closest legal input sizes below and above ``input_size``."""
        below = next((s for s in range(input_size - 1, 0, -1) if self.is_legal(s)), None)
        above = next(s for s in itertools.count(input_size + 1) if self.is_legal(s))
        return below, above

    def output_size(self, input_size: int) -> int:
        """Output tile size for an input tile size; a clear error suggesting legal sizes otherwise."""
        output = self._output_or_none(input_size)
        if output is None:
            below, above = self.nearest_legal(input_size)
            suggestion = " or ".join(str(s) for s in (below, above) if s is not None)
            kind = "a padded" if self.padded else "an unpadded"
            raise TileSizeError(
                f"input tile size {input_size} is illegal for {kind} U-Net with {self.levels} levels "
                f"(every max-pooling must see an even size); nearest legal sizes: {suggestion}"
            )
        return output

    def margin(self, input_size: int) -> int:
        """Context pixels per side that the input tile adds around the output tile (92 in the paper)."""
        return tile_margin(input_size, self.output_size(input_size))

    def tile_step(self, input_size: int) -> int:
        """Distance between neighbouring output tiles for seamless overlap-tile prediction.

        Max-pooling makes an unpadded U-Net shift-equivariant only for shifts by
        multiples of 2^(levels - 1) (16 in the paper), and its output sizes are not
        such multiples (388 = 16 * 24 + 4). Tiles therefore step by the largest
        multiple of 2^(levels - 1) that fits in the output tile and overlap by the
        rest; every output pixel then equals a single pass over the whole image.
        """
        output = self.output_size(input_size)
        if self.padded:
            return output
        factor = 2 ** (self.levels - 1)
        step = output - output % factor
        if step == 0:
            raise TileSizeError(
                f"input tile size {input_size} gives an output of {output} px, below one pooling period ({factor})"
            )
        return step

    def input_size_for_output(self, output_size: int) -> int:
        """The smallest legal input tile whose output is at least ``output_size``."""
        size = output_size
        while not self.is_legal(size) or self.output_size(size) < output_size:
            size += 1
        return size


def geometry_of(model: dict) -> TileGeometry:
    """The tile geometry of the network a preset's ``model`` config describes (one place for every architecture).

    Args:
        model: the ``model`` mapping of a preset (or ``asdict`` of a ``UNetConfig``); ``architecture`` is
            ``unet`` (``levels`` and ``padded`` apply) or ``ternausnet`` (VGG11's five poolings, padded:
            inputs divisible by 32).

    Returns:
        The network's ``TileGeometry``.
    """
    model = schema_defaults("$defs/preset/model") | dict(model)  # what a preset leaves out is the schema's
    if model["architecture"] == "ternausnet":
        return TileGeometry(levels=6, padded=True)
    if model["architecture"] == "unet":
        per_tile = model["norm"] in ("instance", "group")
        return TileGeometry(levels=model["levels"], padded=model["padded"], per_tile_statistics=per_tile)
    raise PipelineError(f"unknown architecture {model['architecture']!r}: use unet or ternausnet")
