"""Cells of sections and volumes larger than memory: the segment stage's methods block by block.

A *whole* is what one partition covers: a section (y, x), or a volume (z, y, x) for 3D cells. It is
cut into blocks of ``side`` pixels per axis; each step reads a block with a ``halo`` of context and
keeps what falls inside the block, so memory is bounded by the block, not the whole:

1. fragments (``fragments``): their ids are their seeds' global keys, so blocks agree without matching;
2. edge tables, each counting the pixel pairs that start in its block (``graph.edge_table``), merged
   exactly into the table of the whole;
3. the partition of the whole's graph, one node per fragment (``graph.PARTITIONS``);
4. pieces: the partition carved (``proposal.carved``) or the thresholded foreground and, for sections, thinned as the metrics thin
   (``proposal.thinned_to_fixpoint``) on the block and its halo; the block's connected pieces of
   foreground, each keyed by its first pixel;
5. pieces joined across block faces, numbered 1..n in the order of their first pixel (C order),
   cells under ``min_size`` pixels dropped (``joined_cells``).

Where what a block's pixels depend on lies within its halo (their fragment's seed, the flooding that reaches
them, the cell that claims a line pixel), the cells are those of the unchunked run (``methods.cells_at``).
Two things are not local in principle: the order in which the watershed floods pixels of equal height, and
which cell Fiji's thinning gives a line pixel far from every cell. ``tests/segmentation/test_blockwise.py``
compares the cells on synthetic sections and volumes, and ``benchmarks/segmentation_blocks.py`` counts the
pixels whose cell differs on ISBI.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .fragments import FragmentOptions, Region, fragments, smallest_index
from .proposal import thinned_to_fixpoint


@dataclass(frozen=True)
class Block:
    """One block of a whole: ``inner`` its slices in the whole; ``outer`` with the halo (clipped at the whole);
    ``crop`` the inner slices within ``outer``; ``region`` where ``outer`` lies in the whole."""

    index: int
    inner: tuple
    outer: tuple
    crop: tuple
    region: Region


def blocks(shape: tuple, side: int, halo: int) -> list[Block]:
    """The blocks of a whole of ``shape``, in C order: ``side`` pixels per axis (fewer at the high end)."""
    starts = [range(0, n, side) for n in shape]
    found = []
    for index, corner in enumerate(itertools.product(*starts)):
        inner = tuple(slice(c, min(c + side, n)) for c, n in zip(corner, shape))
        outer = tuple(slice(max(s.start - halo, 0), min(s.stop + halo, n)) for s, n in zip(inner, shape))
        crop = tuple(slice(i.start - o.start, i.stop - o.start) for i, o in zip(inner, outer))
        cut = tuple((o.start > 0, o.stop < n) for o, n in zip(outer, shape))
        found.append(Block(index, inner, outer, crop, Region(tuple(o.start for o in outer), tuple(shape), cut)))
    return found


def beyond(block: Block, shape: tuple) -> tuple:
    """The block's slices extended by one pixel past each high face that is inside the whole."""
    return tuple(slice(s.start, min(s.stop + 1, n)) for s, n in zip(block.inner, shape))


def block_fragments(boundary: np.ndarray, block: Block, options: FragmentOptions, spacing=None) -> np.ndarray:
    """The fragments inside ``block`` from the boundary map 1 - p of its ``outer`` slices (uint64 keys)."""
    return fragments(boundary, options, block.region, spacing)[block.crop]


def block_pieces(foreground: np.ndarray, block: Block, sections: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The block's connected pieces of cell foreground, from the proposal of its ``outer`` slices (a carved
    partition, ``proposal.carved``, or thresholded probabilities); sections are thinned as the metrics thin.

    Returns:
        uint64 pieces inside the block (0: lines between cells; else 1 + the global C-order index of the
        piece's first pixel), and each piece's key and pixel count.
    """
    if sections:  # Fiji's flooding makes lines that touch no cell in the block cells of their own: not kept
        thinned = thinned_to_fixpoint(foreground)
        grown = np.unique(thinned[foreground])
        foreground = np.isin(thinned, grown[grown > 0])
    foreground = foreground[block.crop]
    connected = ndimage.generate_binary_structure(foreground.ndim, 1)
    labels, count = ndimage.label(foreground, structure=connected)
    keys = smallest_index(labels, count, tuple(s.start for s in block.inner), block.region.shape) + np.uint64(1)
    keys[0] = 0
    return keys[labels], keys[1:], np.bincount(labels.ravel(), minlength=count + 1)[1:]


def face_pairs(pieces: np.ndarray, block: Block, shape: tuple) -> np.ndarray:
    """Pairs of pieces that touch across the block's high faces: ``pieces`` holds the block's slices extended
    by ``beyond``; (n, 2) uint64."""
    pairs = [np.zeros((0, 2), np.uint64)]
    for axis, s in enumerate(block.inner):
        if s.stop >= shape[axis]:
            continue
        last = s.stop - 1 - s.start
        here = np.take(pieces, last, axis=axis)
        there = np.take(pieces, last + 1, axis=axis)
        other = tuple(slice(0, n.stop - n.start) for a, n in enumerate(block.inner) if a != axis)
        here, there = here[other], there[other]
        touching = (here > 0) & (there > 0)
        pairs.append(np.stack([here[touching], there[touching]], axis=1))
    return np.unique(np.concatenate(pairs), axis=0)


def joined_cells(keys: np.ndarray, sizes: np.ndarray, pairs: np.ndarray, min_size: int) -> np.ndarray:
    """Cell ids of pieces: pieces joined through ``pairs``, each cell numbered by the order of its first
    pixel (its smallest key), cells under ``min_size`` pixels 0.

    Args:
        keys: (n,) uint64 sorted piece keys; sizes: (n,) their pixel counts; pairs: (m, 2) keys that touch.

    Returns:
        (n,) uint32 the cell id of each piece.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    count = len(keys)
    if count == 0:
        return np.zeros(0, np.uint32)
    ends = np.searchsorted(keys, pairs.reshape(-1)).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(ends)), (ends[:, 0], ends[:, 1])), shape=(count, count))
    _, component = connected_components(graph, directed=False)
    cell_sizes = np.bincount(component, sizes)
    first = np.full(component.max() + 1, count, np.int64)
    np.minimum.at(first, component, np.arange(count))  # keys are sorted: the smallest index is the first pixel
    keep = cell_sizes >= max(min_size, 1)
    order = np.argsort(first[keep], kind="stable")
    number = np.zeros(len(keep), np.uint32)
    number[np.flatnonzero(keep)[order]] = np.arange(1, keep.sum() + 1, dtype=np.uint32)
    return number[component]
