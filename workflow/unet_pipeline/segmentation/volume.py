"""The blockwise segmentation of a whole prediction (``blockwise``), step by step, each step's results kept in
the work folder (``work``) so that a killed run continues with the first unfinished block.

``Segmenter`` holds the probabilities, options and work folder once; ``cells`` gives the numbered cells of
a block (``blockwise.joined_cells``), for the stage to write.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..core.errors import InputDataError
from ..core.progress import Progress
from ..data import volume_store
from .blockwise import Block, beyond, block_fragments, block_pieces, blocks, face_pairs, joined_cells
from .fragments import relative_spacing
from .graph import EdgeTable, edge_table, merged
from .methods import SegmentationOptions, projected, thresholded
from .proposal import carved
from .work import SegmentWork

log = logging.getLogger(__name__)

WORK_ARRAYS = ("fragments", "pieces")


def work_arrays(shape: tuple, options: SegmentationOptions) -> dict:
    """The work folder's arrays (``work.SegmentWork``) for a (z, y, x) prediction: fragments and pieces, chunked
    by block, so that jobs filling different blocks never write the same chunk."""
    side = options.side(2 if options.dimensions == 2 else 3)
    chunks = (1, side, side) if options.dimensions == 2 else (side, side, side)
    return {name: (shape, tuple(min(c, n) for c, n in zip(chunks, shape)), "uint64") for name in WORK_ARRAYS}


@dataclass
class Segmenter:
    """One blockwise segmentation: the (z, y, x) probability array (``path`` names it in errors), the options
    with their setting chosen, the work folder, and the pixel spacing (z, y, x) for 3D fragments."""

    probabilities: object
    path: str
    options: SegmentationOptions
    work: SegmentWork
    spacing: tuple | None = None

    @property
    def sections(self) -> bool:
        return self.options.dimensions == 2

    def wholes(self) -> list[tuple]:
        """The index prefix of each whole: (z,) per section, or () for the volume."""
        return [(z,) for z in range(self.probabilities.shape[0])] if self.sections else [()]

    def shape(self, whole: tuple) -> tuple:
        return tuple(self.probabilities.shape[len(whole) :])

    def grid(self, whole: tuple) -> list[Block]:
        shape = self.shape(whole)
        return blocks(shape, self.options.side(len(shape)), self.options.halo)

    def array(self, name: str):
        return self.work.array(name)

    def probability(self, whole: tuple, slices: tuple) -> np.ndarray:
        """float32 probabilities of ``slices`` of a whole; NaN or values outside [0, 1] are refused."""
        part = volume_store.decode_probability(self.probabilities[whole + slices])
        if not np.isfinite(part).all() or part.min(initial=0) < 0 or part.max(initial=0) > 1:
            where = f"section {whole[0]}" if whole else "the volume"
            raise InputDataError(f"{self.path}: {where} holds NaN, infinite or out-of-[0, 1] probabilities")
        return part

    def boundary(self, whole: tuple, slices: tuple) -> np.ndarray:
        return 1.0 - self.probability(whole, slices)

    def proposal(self, whole: tuple, slices: tuple, nodes: dict | None) -> np.ndarray:
        """The cells' foreground in ``slices``: the partition of the fragments (the saved node partition
        ``nodes``) carved, or for the threshold method the thresholded probabilities."""
        if nodes is None:
            return thresholded(self.probability(whole, slices), self.options.threshold)
        pieces = self.array("fragments")[whole + slices]
        return carved(projected(pieces, nodes["nodes"], nodes["cluster"]))

    def make_fragments(self, whole: tuple, grid: list | None = None) -> None:
        """The fragments of every block of ``grid`` (default: the whole's) not yet marked done."""
        array, name = self.array("fragments"), whole_name(whole)
        spacing = None if self.spacing is None else relative_spacing(self.spacing[len(whole) :])
        todo = [
            b for b in (self.grid(whole) if grid is None else grid) if not self.work.marked("fragments", name, b.index)
        ]
        # the longest step: its progress within a whole of several blocks (a large section, or a volume)
        progress = Progress(len(todo), f"fragments of {self.path} ({name}): blocks", log) if len(todo) > 1 else None
        for block in todo:
            boundary = self.boundary(whole, block.outer)
            array[whole + block.inner] = block_fragments(boundary, block, self.options.fragments, spacing)
            self.work.mark("fragments", name, block.index)
            if progress:
                progress.update()

    def block_edges(self, whole: tuple, block: Block) -> dict:
        """One block's edge table (``graph.edge_table``), as the arrays the work folder saves."""
        extended = beyond(block, self.shape(whole))
        inner = tuple(slice(0, s.stop - s.start) for s in block.inner)
        levels = self.options.edge_levels(self.boundary(whole, extended), self.options.setting)
        table = edge_table(self.array("fragments")[whole + extended], levels, inner)
        return {"uv": table.uv, "count": table.count, "total": table.total, "nodes": table.nodes}

    def graph(self, whole: tuple) -> EdgeTable:
        """The whole's edge table, merged from the blocks' (each saved once computed)."""
        name = whole_name(whole)
        return merged(
            [
                EdgeTable(**self.work.once(f"edges/{name}/{block.index}", lambda b=block: self.block_edges(whole, b)))
                for block in self.grid(whole)
            ]
        )

    def node_partition(self, whole: tuple) -> dict | None:
        """The saved partition of the whole's graph (nodes, cluster), made once; None for the threshold method."""
        if self.options.method == "threshold":
            return None

        def make() -> dict:
            self.make_fragments(whole)
            table = self.graph(whole)
            return {"nodes": table.nodes, "cluster": self.options.partition(table, self.options.setting)}

        return self.work.once(f"partition/{whole_name(whole)}", make)

    def pieces_of_block(self, whole: tuple, block: Block, nodes: dict | None) -> dict:
        """One block's pieces, written into the work array ``pieces``; their keys and sizes."""
        pieces, keys, sizes = block_pieces(self.proposal(whole, block.outer, nodes), block, self.sections)
        self.array("pieces")[whole + block.inner] = pieces
        return {"keys": keys, "sizes": sizes}

    def make_pieces(self, whole: tuple, nodes: dict | None) -> tuple[np.ndarray, np.ndarray]:
        """Every block's pieces (each made once); their keys and sizes, sorted by key."""
        name = whole_name(whole)
        found = [
            self.work.once(f"pieces/{name}/{block.index}", lambda b=block: self.pieces_of_block(whole, b, nodes))
            for block in self.grid(whole)
        ]
        keys, sizes = np.concatenate([f["keys"] for f in found]), np.concatenate([f["sizes"] for f in found])
        order = np.argsort(keys)
        return keys[order], sizes[order]

    def numbering(self, whole: tuple) -> dict:
        """The saved cell id of every piece of the whole (keys, ids), made once."""

        def make() -> dict:
            keys, sizes = self.make_pieces(whole, self.node_partition(whole))
            array, shape = self.array("pieces"), self.shape(whole)
            pairs = [face_pairs(array[whole + beyond(block, shape)], block, shape) for block in self.grid(whole)]
            return {"keys": keys, "ids": joined_cells(keys, sizes, np.concatenate(pairs), self.options.min_size)}

        return self.work.once(f"cells/{whole_name(whole)}", make)

    def cells(self, whole: tuple, numbering: dict, block: Block) -> np.ndarray:
        """The numbered cells of a block (uint32; 0 on lines and dropped cells)."""
        pieces = self.array("pieces")[whole + block.inner]
        ids = np.concatenate([[0], numbering["ids"], [0]]).astype(np.uint32)  # 0 for the lines
        return np.where(pieces > 0, ids[np.searchsorted(numbering["keys"], pieces) + 1], 0).astype(np.uint32)

    def run(self):
        """Yield (whole, numbering) for every whole, each made or taken from the work folder."""
        what = "sections" if self.sections else "volume"
        progress = Progress(len(self.wholes()), f"segment {self.path}: {what}", log)
        for whole in self.wholes():
            yield whole, self.numbering(whole)
            progress.update()

    def run_shard(self, shard: int, shards: int) -> int:
        """One job's share of the work: the numbering of its run of sections, or for 3D cells the fragments of its
        run of the volume's blocks (the graph needs them all). Returns the wholes or blocks it covered."""
        from ..inference.work_store import shard_blocks

        if self.sections:
            wholes = shard_blocks(self.wholes(), shard, shards)
            for whole in wholes:
                self.numbering(whole)
            return len(wholes)
        mine = shard_blocks(self.grid(()), shard, shards)
        self.make_fragments((), mine)
        return len(mine)


def whole_name(whole: tuple) -> str:
    """A whole's name in the work folder: its section, or "volume"."""
    return "-".join(map(str, whole)) or "volume"
