"""Average linkage as the segment stage runs it (scikit-image's merge_hierarchical with the stage's merge rule)
against a second implementation, bioimage-cpp's edge-weighted agglomeration without size regulariser, on
the same region graphs of real ISBI fragments; and the partitions' contracts."""

import numpy as np
import pytest
from unet_pipeline.segmentation.fragments import FragmentOptions, fragments
from unet_pipeline.segmentation.graph import boundary_levels, edge_table, mean_linkage_nodes, multicut_nodes


def noisy_boundaries(isbi_dir, count=3, size=128):
    import tifffile
    from scipy import ndimage

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
@pytest.mark.parametrize("method", ["multicut", "mean_linkage"])
@pytest.mark.parametrize("level", [0.0, 0.5, 0.9, 1.0])
def test_a_section_without_boundary_evidence_is_one_cell(method, level):
    """A flat probability map (an untrained network's) gives one fragment, or fragments with nothing between."""
    from unet_pipeline.segmentation.methods import SegmentationOptions, segment_section

    probability = np.full((40, 60), level, np.float32)
    cells = segment_section(probability, SegmentationOptions(method=method, edge_threshold=0.5))
    assert cells.shape == (40, 60) and cells.dtype == np.uint32 and cells.max() <= 1
