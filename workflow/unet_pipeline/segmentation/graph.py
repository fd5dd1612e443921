"""The fragments' region adjacency graph, its boundary evidence, and partitions of it into cells.

The graph is an ``EdgeTable``: one row per pair of adjacent fragments (6- or 4-connected) with the
number of adjacent pixel pairs between them and the sum of the boundary map 1 - p over both pixels
of each pair, in integer levels (``LEVELS`` per unit). Integer sums do not depend on the order of
addition, so tables made block by block and merged (``merged``) are exactly the table of the whole.

Every partition cuts an edge whose mean boundary lies above ``edge_threshold`` (a boundary
probability in (0, 1)) and joins the rest as its method decides:

- ``multicut``: the partition of least total cost (Kappes et al. 2011; Beier et al. 2017), with
  costs log((1 - b) / b) + log(t / (1 - t)) from each edge's mean boundary b and the edge
  threshold t (elf's boundary bias beta = 1 - t), weighted by edge length; solved by fusion moves
  (Beier et al. 2015) started from greedy additive contraction and Kernighan-Lin (bioimage-cpp through
  elf). Fusion moves found the optimum of every small graph that Kernighan-Lin alone missed
  (``tests/segmentation/test_multicut_solver.py``); it is deterministic.
- ``mean_linkage``: average-linkage agglomeration, merging the pair of regions with the lowest
  mean boundary along their whole shared border until it reaches t (scikit-image's
  ``merge_hierarchical``).
- ``quantile_linkage``: the same agglomeration on the boundary binarised at t (``boundary_levels``
  with a level), so that an edge's mean is the share of its border at or above t. Two regions
  join while more than the share q (``segmentation.quantile``) of their border lies below t:
  while the q-quantile of the boundary along it is below t. A low quantile joins across an organelle
  that a line of fragments crosses, where the mean stays high; a long membrane with a short gap
  stays cut, where a threshold and connected components would merge the cells
  (``benchmarks/segmentation.py``).

Each returns a node partition: for each fragment of ``EdgeTable.nodes``, the index of its cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Fusion moves stop after this many rounds without a better partition: elf's 25 missed the optimum of 1 of
# the 12 real graphs of tests/segmentation/test_multicut_solver.py (by 0.02 %); 100 found all 12.
FUSION_PATIENCE = 100
LEVELS = 65535  # integer levels of the boundary map per unit: a uint8 probability k / 255 is exactly 257 (255 - k)


def boundary_levels(boundary: np.ndarray, level: float | None = None) -> np.ndarray:
    """The boundary map 1 - p in integer levels (int64), as the edge sums count it; with ``level``, binarised
    at it (``LEVELS`` where 1 - p >= level, else 0), so that an edge's mean is the share of its border there."""
    if level is not None:
        return np.where(np.asarray(boundary) >= level, LEVELS, 0).astype(np.int64)
    return np.rint(np.asarray(boundary, np.float64) * LEVELS).astype(np.int64)


@dataclass(frozen=True)
class EdgeTable:
    """Adjacent fragment pairs: ``uv`` (n, 2) uint64 ids with u < v; ``count`` (n,) int64 adjacent pixel
    pairs; ``total`` (n,) int64 sum of both pixels' boundary levels over them. ``nodes``: the sorted ids of
    every fragment, also those without neighbours."""

    uv: np.ndarray
    count: np.ndarray
    total: np.ndarray
    nodes: np.ndarray

    @property
    def mean(self) -> np.ndarray:
        """Each edge's mean boundary 1 - p, in [0, 1]."""
        return self.total / (2.0 * LEVELS * np.maximum(self.count, 1))

    def node_pairs(self) -> np.ndarray:
        """``uv`` as indices into ``nodes`` (int64)."""
        return np.searchsorted(self.nodes, self.uv)


def _summed(uv, count, total, nodes) -> EdgeTable:
    """One row per distinct pair, counts and totals added (the pairs sorted)."""
    if len(uv) == 0:
        return EdgeTable(np.zeros((0, 2), np.uint64), np.zeros(0, np.int64), np.zeros(0, np.int64), nodes)
    pairs, inverse = np.unique(uv, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    return EdgeTable(
        pairs,
        np.bincount(inverse, count, len(pairs)).astype(np.int64),
        np.bincount(inverse, total, len(pairs)).astype(np.int64),  # exact: sums stay below 2^53
        nodes,
    )


def edge_table(fragments: np.ndarray, levels: np.ndarray, inner: tuple | None = None) -> EdgeTable:
    """The edges between adjacent pixels of different fragments, along every axis.

    Args:
        fragments: uint64 fragment ids of a block and the one pixel after it along each axis where there is
            one (so that pairs across its high faces count here, and nowhere else).
        levels: int64 boundary levels of the same pixels (``boundary_levels``).
        inner: the block's slices within ``fragments`` (default: all of it). Pairs start in it; its nodes
            are those of the block.
    """
    inner = inner or tuple(slice(0, n) for n in fragments.shape)
    uv, count, total = [np.zeros((0, 2), np.uint64)], [np.zeros(0)], [np.zeros(0)]
    for axis in range(fragments.ndim):
        stop = min(inner[axis].stop + 1, fragments.shape[axis])
        first = tuple(slice(s.start, stop - 1) if a == axis else s for a, s in enumerate(inner))
        second = tuple(slice(s.start + 1, stop) if a == axis else s for a, s in enumerate(inner))
        a, b = fragments[first], fragments[second]
        differ = a != b
        a, b = a[differ], b[differ]
        uv.append(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1))
        count.append(np.ones(len(a)))
        total.append((levels[first][differ] + levels[second][differ]).astype(np.float64))
    nodes = np.unique(fragments[inner])
    return _summed(np.concatenate(uv), np.concatenate(count), np.concatenate(total), nodes)


def merged(tables: list) -> EdgeTable:
    """The table of the whole from the tables of its blocks."""
    nodes = np.unique(np.concatenate([t.nodes for t in tables]))
    uv = np.concatenate([t.uv for t in tables])
    count = np.concatenate([t.count for t in tables]).astype(np.float64)
    return _summed(uv, count, np.concatenate([t.total for t in tables]).astype(np.float64), nodes)


def multicut_costs(table: EdgeTable, edge_threshold: float) -> np.ndarray:
    """Signed edge costs (positive joins) from the mean boundary, weighted by length relative to the longest."""
    from elf.segmentation.multicut import transform_probabilities_to_costs

    return transform_probabilities_to_costs(table.mean, beta=1.0 - edge_threshold, edge_sizes=table.count)


def solve_multicut(nodes: int, pairs: np.ndarray, costs: np.ndarray) -> np.ndarray:
    """The partition of least cost of a graph of ``nodes`` nodes with edges ``pairs`` (m, 2) of node indices
    and signed ``costs`` (positive joins): each node's component (int64), by fusion moves."""
    import bioimage_cpp as bic
    from elf.segmentation.multicut import multicut_fusion_moves

    graph = bic.graph.undirected_graph(nodes)
    graph.insert_edges(pairs.astype(np.uint64))
    return np.asarray(multicut_fusion_moves(graph, costs, num_it_stop=FUSION_PATIENCE), np.int64)


def multicut_nodes(table: EdgeTable, edge_threshold: float) -> np.ndarray:
    """For each node, its multicut component (int64)."""
    if len(table.uv) == 0:
        return np.arange(len(table.nodes))
    return solve_multicut(len(table.nodes), table.node_pairs(), multicut_costs(table, edge_threshold))


def _joined_border(rag, src, dst, neighbour) -> dict:
    """skimage's weight callback: the border of the joined region with a neighbour averages the boundary
    over all its pixel pairs (``count``; ``weight``: their mean)."""
    borders = [rag[node][neighbour] for node in (src, dst) if rag.has_edge(node, neighbour)]
    count = sum(border["count"] for border in borders)
    return {"count": count, "weight": sum(border["weight"] * border["count"] for border in borders) / count}


def mean_linkage_nodes(table: EdgeTable, edge_threshold: float) -> np.ndarray:
    """For each node, its cluster under average linkage on the mean boundary, stopped at the threshold (int64).

    scikit-image relabels an array of node indices at the end; given ``arange``, that is the node partition."""
    from skimage.graph import RAG, merge_hierarchical

    rag = RAG()
    rag.add_nodes_from((i, {"labels": [i]}) for i in range(len(table.nodes)))
    for (u, v), count, mean in zip(table.node_pairs().tolist(), table.count.tolist(), table.mean.tolist()):
        rag.add_edge(u, v, count=count, weight=mean)
    nodes = np.arange(len(table.nodes))
    return merge_hierarchical(nodes, rag, edge_threshold, False, True, lambda *_: None, _joined_border).astype(np.int64)


def quantile_linkage_nodes(table: EdgeTable, quantile: float) -> np.ndarray:
    """For each node, its cluster under average linkage on a table of binarised levels (``boundary_levels``
    with the edge threshold as level): regions join while more than ``quantile`` of their border lies below it."""
    return mean_linkage_nodes(table, 1.0 - quantile)


PARTITIONS = {"multicut": multicut_nodes, "mean_linkage": mean_linkage_nodes}
