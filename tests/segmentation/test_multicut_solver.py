"""The multicut solver the segment stage uses (bioimage-cpp's fusion moves, warm-started, through elf)
against the exact optimum: every partition of small graphs enumerated, and an integer program solved by a
second implementation (HiGHS through scipy) on the region graphs of real ISBI fragments.

bioimage-cpp is young; these are the exact answers it is held to. Each test counts what it tried."""

import itertools

import numpy as np
import pytest
from unet_pipeline.segmentation.fragments import FragmentOptions, fragments
from unet_pipeline.segmentation.graph import boundary_levels, edge_table, multicut_costs, solve_multicut


def solve(uv: np.ndarray, costs: np.ndarray, nodes: int) -> np.ndarray:
    """The stage's solver on a graph given by its edges."""
    return solve_multicut(nodes, uv, costs)


def energy(uv: np.ndarray, costs: np.ndarray, labels: np.ndarray) -> float:
    """The multicut objective: the summed cost of the cut edges (positive costs join)."""
    return float(costs[labels[uv[:, 0]] != labels[uv[:, 1]]].sum())


def partitions(n: int):
    """Every partition of n nodes as a label vector (restricted growth strings)."""

    def grow(prefix, top):
        if len(prefix) == n:
            yield np.array(prefix)
            return
        for label in range(top + 2):
            yield from grow(prefix + [label], max(top, label))

    yield from grow([0], 0)


def test_the_solver_finds_the_optimum_of_every_small_graph():
    rng = np.random.default_rng(0)
    tried = optimal = 0
    for trial in range(300):
        n = int(rng.integers(3, 8))
        pairs = np.array(list(itertools.combinations(range(n), 2)))
        uv = pairs[rng.random(len(pairs)) < rng.uniform(0.4, 1.0)]
        if len(uv) == 0:
            continue
        costs = rng.normal(0.0, 1.0, len(uv))
        best = min(energy(uv, costs, labels) for labels in partitions(n))
        found = energy(uv, costs, solve(uv, costs, n))
        tried += 1
        optimal += found == pytest.approx(best, abs=1e-9)
    assert tried >= 290 and optimal == tried, f"{optimal} of {tried} graphs solved to their optimum"


def ilp_optimum(uv: np.ndarray, costs: np.ndarray, nodes: int) -> float:
    """The exact multicut by HiGHS: cut variables, cycle inequalities added where the solution violates them."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse.csgraph import shortest_path

    rows = []
    while True:
        constraints = [LinearConstraint(np.array(rows), -np.inf, 0)] if rows else []
        result = milp(costs, integrality=np.ones(len(uv)), bounds=Bounds(0, 1), constraints=constraints)
        cut = np.rint(result.x).astype(bool)
        joined = np.zeros((nodes, nodes))
        joined[uv[~cut, 0], uv[~cut, 1]] = joined[uv[~cut, 1], uv[~cut, 0]] = 1
        _, previous = shortest_path(joined, unweighted=True, directed=False, return_predecessors=True)
        added = 0
        for e in np.flatnonzero(cut):
            u, v = uv[e]
            if previous[u, v] < 0:
                continue  # u and v are apart: the cut is consistent
            row = np.zeros(len(uv))
            row[e] = 1.0
            while v != u:  # x_uv <= the cuts along the joined path from u to v
                w = previous[u, v]
                row[np.flatnonzero(((uv[:, 0] == w) & (uv[:, 1] == v)) | ((uv[:, 0] == v) & (uv[:, 1] == w)))] = -1.0
                v = w
            rows.append(row)
            added += 1
        if not added:
            return float(result.fun)


def test_the_solver_matches_an_integer_program_on_real_region_graphs(isbi_dir):
    import tifffile
    from scipy import ndimage

    labels = tifffile.imread(isbi_dir / "train-labels.tif")[20:24, :96, :96] > 0
    rng = np.random.default_rng(2)
    tried = optimal = 0
    for section in labels:
        for edge_threshold in (0.3, 0.5, 0.7):
            noisy = ndimage.gaussian_filter(section.astype(np.float32), 1.5) + rng.normal(0, 0.2, section.shape)
            boundary = np.clip(1.0 - noisy, 0, 1).astype(np.float32)
            pieces = fragments(boundary, FragmentOptions(min_size=5))
            table = edge_table(pieces, boundary_levels(boundary))
            uv = table.node_pairs()
            costs = multicut_costs(table, edge_threshold)
            nodes = len(table.nodes)
            found = energy(uv, costs, solve(uv, costs, nodes))
            tried += 1
            optimal += found == pytest.approx(ilp_optimum(uv, costs, nodes), abs=1e-6)
    assert tried == 12 and optimal == tried, f"{optimal} of {tried} region graphs solved to the ILP's optimum"
