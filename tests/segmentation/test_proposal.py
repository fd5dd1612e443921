"""The convention by which instance labels are scored: carve a partition, thin it as the metrics do, and the
cells come back unchanged from their foreground by 4-connectivity and by thinning (a fuzz that counts)."""

import numpy as np
from scipy import ndimage
from unet_pipeline.metrics.thinning import thinned_cells
from unet_pipeline.segmentation.proposal import carved, cells_of_proposal, proposal_of
from unet_pipeline.transforms.cells import FOUR_CONNECTED


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal zero sets and a one-to-one map between the ids elsewhere."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(pairs[0]) == len(np.unique(pairs[0])) == len(np.unique(pairs[1]))


def round_trips(cells: np.ndarray) -> bool:
    foreground = proposal_of(cells)
    components, _ = ndimage.label(foreground, structure=FOUR_CONNECTED)
    return same_partition(thinned_cells(foreground), cells) and same_partition(components, cells)


def test_cells_of_any_proposal_come_back_from_their_foreground():
    rng = np.random.default_rng(0)
    tried = survived = 0
    for _ in range(1500):
        shape = tuple(rng.integers(3, 14, 2))
        foreground = rng.random(shape) < rng.uniform(0.05, 0.95)
        cells = cells_of_proposal(foreground)
        if not cells.any():
            continue
        tried += 1
        survived += round_trips(cells)
    assert tried > 1400 and survived == tried, f"{survived} of {tried} proposals round-trip"


def test_cells_of_any_partition_come_back_from_their_foreground():
    """Partitions like the agglomeration's: blobs of a random Voronoi tessellation, ids touching."""
    rng = np.random.default_rng(1)
    tried = survived = 0
    for _ in range(600):
        shape = tuple(rng.integers(4, 40, 2))
        seeds = np.zeros(shape, np.int32)
        count = int(rng.integers(1, 12))
        seeds[rng.integers(0, shape[0], count), rng.integers(0, shape[1], count)] = np.arange(1, count + 1)
        _, nearest = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
        partition = seeds[tuple(nearest)]
        foreground = carved(partition)
        assert not (
            (foreground[:, 1:] & foreground[:, :-1] & (partition[:, 1:] != partition[:, :-1])).any()
            or (foreground[1:] & foreground[:-1] & (partition[1:] != partition[:-1])).any()
        ), "two cells stay 4-adjacent after carving"
        cells = cells_of_proposal(foreground)
        tried += 1
        survived += round_trips(cells) if cells.any() else True
    assert tried == 600 and survived == tried, f"{survived} of {tried} partitions round-trip"


def test_a_proposal_without_foreground_has_no_cells_and_small_cells_are_dropped():
    assert not cells_of_proposal(np.zeros((5, 5), bool)).any()
    foreground = np.zeros((9, 9), bool)
    foreground[1:7, 1:7] = True
    foreground[8, 8] = True
    cells = cells_of_proposal(foreground, min_size=4)
    assert cells.max() == 1 and cells.dtype == np.uint32 and cells[8, 8] == 0
