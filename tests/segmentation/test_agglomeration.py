"""Average linkage as the segment stage runs it (scikit-image's merge_hierarchical with the stage's merge rule)
against a second implementation, bioimage-cpp's edge-weighted agglomeration without size regulariser, on
the same region graphs of real ISBI fragments; and the partitions' contracts."""

import numpy as np
import pytest
from scipy import ndimage
from unet_pipeline.segmentation.fragments import FragmentOptions, fragments
from unet_pipeline.segmentation.graph import (
    boundary_levels,
    edge_table,
    mean_linkage_nodes,
    multicut_nodes,
    quantile_linkage_nodes,
)


def noisy_boundaries(isbi_dir, count=3, size=128):
    import tifffile

    labels = tifffile.imread(isbi_dir / "train-labels.tif")[20 : 20 + count, :size, :size] > 0
    rng = np.random.default_rng(3)
    for section in labels:
        noisy = ndimage.gaussian_filter(section.astype(np.float32), 1.5) + rng.normal(0, 0.2, section.shape)
        yield np.clip(1.0 - noisy, 0, 1).astype(np.float32)


def same_partition(a, b):
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(pairs[0]) == len(np.unique(pairs[0])) == len(np.unique(pairs[1]))


def bioimage_cpp_average_linkage(table, clusters):
    """The same graph (mean boundary and pixel-pair count per edge) merged by bioimage-cpp to ``clusters``."""
    import bioimage_cpp as bic

    graph = bic.graph.undirected_graph(len(table.nodes))
    graph.insert_edges(table.node_pairs().astype(np.uint64))
    policy = bic.graph.agglomeration.EdgeWeightedClusterPolicy(num_clusters_stop=clusters, size_regularizer=0.0)
    return policy.optimize(
        graph, table.mean, edge_sizes=table.count.astype(np.float64), node_sizes=np.ones(len(table.nodes))
    )


def test_average_linkage_agrees_with_a_second_implementation(isbi_dir):
    tried = agreed = 0
    for boundary in noisy_boundaries(isbi_dir):
        pieces = fragments(boundary, FragmentOptions(min_size=5))
        table = edge_table(pieces, boundary_levels(boundary))
        for edge_threshold in (0.3, 0.5, 0.7):
            ours = mean_linkage_nodes(table, edge_threshold)
            theirs = bioimage_cpp_average_linkage(table, len(np.unique(ours)))
            tried += 1
            agreed += same_partition(ours, theirs)
    assert tried == 9 and agreed == tried, f"{agreed} of {tried} agglomerations agree"


@pytest.mark.parametrize("method", ["multicut", "mean_linkage"])
def test_partitions_join_fragments_and_go_from_oversegmentation_to_one_cell(isbi_dir, method):
    boundary = next(noisy_boundaries(isbi_dir, 1))
    pieces = fragments(boundary, FragmentOptions())
    table = edge_table(pieces, boundary_levels(boundary))
    counts = []
    for edge_threshold in (0.02, 0.3, 0.5, 0.7, 0.98):
        nodes = (multicut_nodes if method == "multicut" else mean_linkage_nodes)(table, edge_threshold)
        assert nodes.shape == table.nodes.shape and nodes.min() == 0
        counts.append(len(np.unique(nodes)))
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1] and counts[-1] <= 3
    assert counts[0] >= len(table.nodes) * 0.8


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("method", ["multicut", "mean_linkage", "quantile_linkage"])
@pytest.mark.parametrize("level", [0.0, 0.5, 0.9, 1.0])
def test_a_section_without_boundary_evidence_is_one_cell(method, level):
    """A flat probability map (an untrained network's) gives one fragment, or fragments with nothing between."""
    from unet_pipeline.segmentation.methods import SegmentationOptions, segment_section

    probability = np.full((40, 60), level, np.float32)
    cells = segment_section(probability, SegmentationOptions(method=method, edge_threshold=0.5))
    assert cells.shape == (40, 60) and cells.dtype == np.uint32 and cells.max() <= 1


def two_borders(gap_rows: int, organelle_rows: int, rows: int = 60):
    """Three hand-made fragments side by side (ids 1, 2, 3) on 2-px lines of boundary 0.9: between 1 and 2
    a membrane open over ``gap_rows`` rows (boundary 0.1), between 2 and 3 an organelle's line, low over
    ``organelle_rows`` rows. Each line's two pixels lie one in each fragment, so a border's share below
    a level is its rows below it over ``rows``."""
    pieces = np.repeat(np.repeat(np.array([[1, 2, 3]], np.uint64), 10, axis=1), rows, axis=0)
    boundary = np.full(pieces.shape, 0.05, np.float32)
    boundary[:, 9:11] = boundary[:, 19:21] = 0.9
    boundary[:gap_rows, 9:11] = 0.1
    boundary[:organelle_rows, 19:21] = 0.1
    return pieces, boundary


@pytest.mark.parametrize(
    "quantile, expected",
    [(0.02, [0, 0, 0]), (0.05, [0, 1, 1]), (0.5, [0, 1, 2])],
)
def test_quantile_linkage_joins_where_more_than_the_quantile_of_a_border_lies_below_the_threshold(quantile, expected):
    """2 of 60 rows open (3 %) between fragments 1 and 2, 24 of 60 (40 %) between 2 and 3: at quantile 0.05
    the membrane stays cut and the organelle's line joins; mean linkage cuts both, connectivity joins both."""
    pieces, boundary = two_borders(gap_rows=2, organelle_rows=24)
    table = edge_table(pieces, boundary_levels(boundary, 0.5))
    np.testing.assert_allclose(table.mean, [58 / 60, 36 / 60])  # the share of each border at or above 0.5
    assert quantile_linkage_nodes(table, quantile).tolist() == expected
    assert mean_linkage_nodes(edge_table(pieces, boundary_levels(boundary)), 0.5).tolist() == [0, 1, 2]
    assert ndimage.label(boundary < 0.5)[1] == 1  # the threshold method's one cell


def joint_share_below(pieces, boundary, clusters, level):
    """For each pair of adjacent clusters: the share of the pixel ends of their joint border whose boundary
    is below ``level``, counted from the pixels themselves (not from an edge table)."""
    counts = {}
    for axis in range(pieces.ndim):
        first = tuple(slice(0, -1) if a == axis else slice(None) for a in range(pieces.ndim))
        second = tuple(slice(1, None) if a == axis else slice(None) for a in range(pieces.ndim))
        a, b = clusters[pieces[first]], clusters[pieces[second]]
        below = (boundary[first] < level).astype(int) + (boundary[second] < level)
        for u, v, n in zip(a[a != b].tolist(), b[a != b].tolist(), below[a != b].tolist()):
            key = (min(u, v), max(u, v))
            low, ends = counts.get(key, (0, 0))
            counts[key] = (low + n, ends + 2)
    return {key: low / ends for key, (low, ends) in counts.items()}


def test_quantile_linkage_stops_where_no_two_adjacent_cells_have_more_than_the_quantile_below(isbi_dir):
    """On real ISBI fragments: every pair of adjacent cells it leaves has at most the quantile of its joint
    border below the threshold (its stopping rule, counted from the pixels), and it joins at least as much
    as it cuts at a lower quantile."""
    tried = held = 0
    for boundary in noisy_boundaries(isbi_dir, 2):
        pieces = fragments(boundary, FragmentOptions(min_size=5))
        for level in (0.3, 0.5):
            table = edge_table(pieces, boundary_levels(boundary, level))
            counts = []
            for quantile in (0.02, 0.05, 0.2):
                nodes = quantile_linkage_nodes(table, quantile)
                clusters = np.zeros(int(table.nodes.max()) + 1, np.int64)
                clusters[table.nodes.astype(np.int64)] = nodes
                shares = joint_share_below(pieces, boundary, clusters, level)
                tried += 1
                held += max(shares.values(), default=0) <= quantile + 1e-12
                counts.append(len(np.unique(nodes)))
            assert counts == sorted(counts) and counts[0] < len(table.nodes)
    assert tried == 12 and held == tried, f"{held} of {tried} partitions keep the stopping rule"
