"""Instance labels and the binarised proposal that the ISBI metrics score: one convention, both ways.

A proposal is a (y, x) bool foreground, True inside cells. The metrics turn it into cells by
Fiji's watershed (``metrics.thinning.thinned_cells``: V_rand, V_info) or by 4-connected
components (the Table-1 Rand error), and binarise nothing else. The segment stage's cells
are made so that both give them back exactly:

- ``carved`` makes a proposal of any partition (ids > 0 everywhere, e.g. agglomerated
  fragments): a pixel becomes border where its right or lower neighbour has another id, so
  no two cells stay 4-adjacent (a 1-px line between them);
- ``cells_of_proposal`` thins that proposal as the metrics do, until thinning changes
  nothing more: 1-px watershed lines (id 0) between cells, ids 1..n;
- ``proposal_of`` of such cells is ``cells > 0``, and 4-connectivity or thinning of it gives
  the same cells again (``tests/segmentation/test_proposal.py`` checks that round trip).
"""

from __future__ import annotations

import numpy as np

from ..metrics.thinning import thinned_cells


def carved(partition: np.ndarray) -> np.ndarray:
    """The proposal of a partition: bool, False where a pixel's next neighbour along any axis (right, lower,
    next section) differs, or on id 0. A section (y, x) or a volume (z, y, x); a block carves as its whole
    does where it reaches one pixel beyond its high faces."""
    foreground = partition > 0
    for axis in range(partition.ndim):
        here = tuple(slice(0, -1) if a == axis else slice(None) for a in range(partition.ndim))
        after = tuple(slice(1, None) if a == axis else slice(None) for a in range(partition.ndim))
        foreground[here] &= partition[here] == partition[after]
    return foreground


def thinned_to_fixpoint(foreground: np.ndarray) -> np.ndarray:
    """Fiji's thinning repeated until it changes nothing: (y, x) int32 cells whose foreground thins to itself.

    One thinning can leave a line pixel that touches a single cell (a spur of the flooding order); a
    second one floods it into that cell. The foreground only grows, so this ends, mostly after one
    repeat."""
    cells = thinned_cells(foreground)
    while True:
        again = thinned_cells(cells > 0)
        if np.array_equal(again > 0, cells > 0):
            return cells
        cells = again


def cells_of_proposal(foreground: np.ndarray, min_size: int = 0) -> np.ndarray:
    """Cells of a proposal as the metrics see them (``thinned_to_fixpoint``), cells under ``min_size`` dropped.

    Args:
        foreground: (y, x) bool proposal.
        min_size: cells with fewer pixels become 0 (then the round trip of the module docstring floods
            them into their neighbours: it holds for min_size 0).

    Returns:
        (y, x) uint32 ids 1..n in the order of their first pixel (``numbered``); 0 on the watershed lines
        and dropped cells. A proposal without
        foreground has no cells (the metrics would flood it into one segment).
    """
    if not foreground.any():
        return np.zeros(foreground.shape, np.uint32)
    return numbered(thinned_to_fixpoint(foreground), min_size)


def numbered(cells: np.ndarray, min_size: int = 0) -> np.ndarray:
    """Cells renumbered 1..n in the order of their first pixel (C order), those under ``min_size`` pixels 0."""
    ids, first, sizes = np.unique(cells.ravel(), return_index=True, return_counts=True)
    keep = (ids > 0) & (sizes >= max(min_size, 1))
    lookup = np.zeros(int(ids[-1]) + 1, np.uint32)
    lookup[ids[keep][np.argsort(first[keep])]] = np.arange(1, keep.sum() + 1, dtype=np.uint32)
    return lookup[cells]


def proposal_of(cells: np.ndarray) -> np.ndarray:
    """The proposal the metrics score for instance labels of the segment stage: their foreground."""
    return cells > 0
