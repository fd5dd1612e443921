"""The fragments' region adjacency graph, its boundary features, and partitions of it into cells.

Every partition cuts an edge whose boundary evidence lies above ``edge_threshold`` (a boundary
probability 1 - p in (0, 1)) and joins the rest as its method decides:

- ``multicut``: the partition of least total cost (Kappes et al. 2011; Beier et al. 2017), with
  costs log((1 - b) / b) + log(t / (1 - t)) from each edge's mean boundary b and the edge
  threshold t (elf's boundary bias beta = 1 - t), weighted by edge length; solved by fusion moves
  (Beier et al. 2015) started from greedy additive contraction and Kernighan-Lin (bioimage-cpp through
  elf). Fusion moves found the optimum of every small graph that Kernighan-Lin alone missed
  (``tests/segmentation/test_multicut_solver.py``) at about 0.05 s per ISBI section; it is deterministic.
- ``mean_linkage``: average-linkage agglomeration, merging the pair of regions with the lowest
  mean boundary along their whole shared border until it reaches t (scikit-image's
  ``merge_hierarchical``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The columns of ``RegionGraph.features`` (elf's ``compute_boundary_features``).
EDGE_FEATURES = ("mean", "median", "std", "min", "max", "p5", "p10", "p25", "p75", "p90", "p95", "length")


@dataclass(frozen=True)
class RegionGraph:
    """The adjacency graph of a section's fragments (bioimage-cpp ``RegionAdjacencyGraph``), one row of
    ``EDGE_FEATURES`` per edge, of the boundary map 1 - p along it."""

    rag: object
    features: np.ndarray

    def feature(self, name: str) -> np.ndarray:
        return self.features[:, EDGE_FEATURES.index(name)]


def region_graph(fragments: np.ndarray, boundary: np.ndarray) -> RegionGraph:
    """The graph of (y, x) uint32 fragments with the features of the (y, x) float32 boundary map."""
    from elf.segmentation.features import compute_boundary_features, compute_rag

    rag = compute_rag(fragments, n_threads=1)
    return RegionGraph(rag, compute_boundary_features(rag, fragments, boundary.astype(np.float32), n_threads=1))


def multicut_costs(graph: RegionGraph, edge_threshold: float) -> np.ndarray:
    """Signed edge costs (positive joins) from the mean boundary, weighted by length relative to the longest."""
    from elf.segmentation.multicut import transform_probabilities_to_costs

    return transform_probabilities_to_costs(
        graph.feature("mean"), beta=1.0 - edge_threshold, edge_sizes=graph.feature("length")
    )


def multicut_partition(fragments: np.ndarray, graph: RegionGraph, edge_threshold: float) -> np.ndarray:
    """(y, x) uint32 cells: each fragment takes the id of its multicut component."""
    from elf.segmentation.features import project_node_labels_to_pixels
    from elf.segmentation.multicut import multicut_fusion_moves

    if graph.rag.number_of_edges == 0:
        return fragments
    nodes = multicut_fusion_moves(graph.rag, multicut_costs(graph, edge_threshold))
    return project_node_labels_to_pixels(graph.rag, fragments, nodes, n_threads=1).astype(np.uint32) + 1


def _joined_border(rag, src, dst, neighbour) -> dict:
    """skimage's weight callback: the border of the joined region with a neighbour averages the boundary
    over all its pixels (``count``: border pixels, ``weight``: their mean)."""
    borders = [rag[node][neighbour] for node in (src, dst) if rag.has_edge(node, neighbour)]
    count = sum(border["count"] for border in borders)
    return {"count": count, "weight": sum(border["weight"] * border["count"] for border in borders) / count}


def border_graph(fragments: np.ndarray, boundary: np.ndarray):
    """The fragments' graph for average linkage (scikit-image's ``rag_boundary``: each border's pixel count and
    mean of ``boundary``, 4-connected), built once for every edge threshold; None for a single fragment, which
    has no border (scikit-image needs one)."""
    from skimage.graph import rag_boundary

    if fragments.min() == fragments.max():
        return None
    return rag_boundary(fragments, boundary.astype(np.float64), connectivity=1)


def mean_linkage_partition(fragments: np.ndarray, borders, edge_threshold: float) -> np.ndarray:
    """(y, x) uint32 cells by average linkage of the fragments on their mean boundary (``border_graph``, left
    unchanged: the merging works on a copy), stopped at the threshold."""
    from skimage.graph import merge_hierarchical

    if borders is None:
        return np.ones(fragments.shape, np.uint32)
    merged = merge_hierarchical(fragments, borders, edge_threshold, True, True, lambda *_: None, _joined_border)
    return merged.astype(np.uint32) + 1
