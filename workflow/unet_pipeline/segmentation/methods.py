"""The segment stage's methods (``segmentation.method``): one section's cells from its probabilities.

- ``threshold``: the foreground p > threshold, its 4-connected cells thinned as the metrics
  thin them (the weakest method in the field's comparisons, kept as the baseline);
- ``quantile_linkage`` (the schema's default), ``mean_linkage`` and ``multicut``: fragments of the
  boundary map 1 - p (``fragments``), their region graph, and its partition at an edge threshold
  (``graph``).

Each method has one setting that the evaluation chooses on the validation sections
(``tuned``): the threshold, or the edge threshold. The cells of every method follow the
proposal convention of ``proposal``, so the metrics score them exactly as written.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np

from ..core.defaults import defaults_from_schema
from ..core.errors import InputDataError
from .fragments import FragmentOptions, fragments
from .graph import PARTITIONS, boundary_levels, edge_table, quantile_linkage_nodes

log = logging.getLogger(__name__)

# method -> the setting the evaluation chooses for it. The metrics (numba) are imported where used: the
# workflow reads this module when it parses the Snakefile.
TUNED = {
    "threshold": "threshold",
    "multicut": "edge_threshold",
    "mean_linkage": "edge_threshold",
    "quantile_linkage": "edge_threshold",
}


@dataclass(frozen=True)
@defaults_from_schema("segmentation")
class SegmentationOptions:
    """How probabilities become cells (defaults: the schema's ``segmentation``). ``threshold`` and
    ``edge_threshold`` are None until chosen (``with_setting``); only the method's own one is needed."""

    threshold: float | None
    edge_threshold: float | None
    method: str
    quantile: float
    min_size: int
    search: tuple
    choice_window: float
    fragments: FragmentOptions
    dimensions: int
    block: int
    halo: int
    shards: int

    def __post_init__(self):
        if self.method not in TUNED:
            raise ValueError(f"segmentation.method {self.method!r}: not one of {', '.join(TUNED)}")
        if isinstance(self.fragments, dict):
            object.__setattr__(self, "fragments", FragmentOptions(**self.fragments))
        object.__setattr__(self, "search", tuple(self.search))

    @property
    def tuned(self) -> str:
        """The name of the setting the evaluation chooses for this method."""
        return TUNED[self.method]

    @property
    def settings(self) -> tuple:
        """The values of ``tuned`` that the evaluation tries: Fiji's thresholds, or ``search``."""
        from ..metrics.scores import THRESHOLDS

        return THRESHOLDS if self.method == "threshold" else self.search

    @property
    def setting(self) -> float | None:
        """The value of ``tuned`` (None until chosen)."""
        return getattr(self, self.tuned)

    @property
    def binarised(self) -> bool:
        """Whether the edge table depends on the setting: quantile linkage sums the boundary binarised at it."""
        return self.method == "quantile_linkage"

    def edge_levels(self, boundary: np.ndarray, value: float) -> np.ndarray:
        """The boundary levels whose sums along each edge the method's partition reads, at setting ``value``."""
        return boundary_levels(boundary, value if self.binarised else None)

    def partition(self, table, value: float) -> np.ndarray:
        """The method's node partition of an edge table (``graph``) made by ``edge_levels`` at ``value``."""
        if self.binarised:  # the table's means are shares of the border at or above the setting
            return quantile_linkage_nodes(table, self.quantile)
        return PARTITIONS[self.method](table, value)

    def with_setting(self, value: float) -> SegmentationOptions:
        return dataclasses.replace(self, **{self.tuned: value})

    def side(self, ndim: int) -> int:
        """A block's side in pixels for a whole of ``ndim`` axes: ``block`` pixels in all, as a square or cube."""
        return max(1, round(self.block ** (1.0 / ndim)))


def projected(pieces: np.ndarray, nodes: np.ndarray, cluster: np.ndarray) -> np.ndarray:
    """A partition of a graph's sorted ``nodes`` (fragment ids) into ``cluster`` s as pixels: each fragment's
    cell, 1..n (int64)."""
    return cluster[np.searchsorted(nodes, pieces)] + 1


def thresholded(probability: np.ndarray, threshold: float) -> np.ndarray:
    """The ``threshold`` method's foreground: p > threshold (compared in double, at Fiji's value for the
    thresholds 0.0, ..., 1.0), bool."""
    from ..metrics.scores import FIJI_VALUE

    return probability.astype(np.float64) > FIJI_VALUE.get(threshold, threshold)


def cells_at(probability: np.ndarray, options: SegmentationOptions):
    """A function of the method's setting that gives one section's cells at that setting.

    The fragments do not depend on the setting, nor does their graph except for quantile linkage: they
    are made once here, so a search over settings (the evaluation's) pays for them once per section.

    Args:
        probability: (y, x) float32 foreground probability in [0, 1].
        options: the method, its fragments and minimum cell size (its setting is not used).

    Returns:
        setting -> (y, x) uint32 cell ids 1..n, 0 on the 1-px lines between cells and on dropped small
        cells (``proposal.cells_of_proposal``).
    """
    from .proposal import carved, cells_of_proposal

    if options.method == "threshold":
        return lambda value: cells_of_proposal(thresholded(probability, value), options.min_size)
    boundary = 1.0 - probability.astype(np.float32)
    pieces = fragments(boundary, options.fragments)
    shared = None if options.binarised else edge_table(pieces, boundary_levels(boundary))

    def at(value: float) -> np.ndarray:
        table = shared if shared is not None else edge_table(pieces, options.edge_levels(boundary, value))
        return cells_of_proposal(
            carved(projected(pieces, table.nodes, options.partition(table, value))), options.min_size
        )

    return at


def segment_section(probability: np.ndarray, options: SegmentationOptions) -> np.ndarray:
    """One section's cells at the method's setting (``cells_at``; ``options.tuned`` must be set)."""
    value = options.setting
    if value is None:
        raise ValueError(f"segmentation.{options.tuned} is not set (the evaluation chooses it)")
    return cells_at(probability, options)(value)


def cells_record(options: SegmentationOptions) -> dict:
    """How cells were made, as the evaluation summary records it (its ``cells`` entry, less the scores)."""
    record = {
        "method": options.method,
        "tuned": options.tuned,
        "choice_window": options.choice_window,
        "fragments": dataclasses.asdict(options.fragments),
    }
    if options.binarised:
        record["quantile"] = options.quantile
    return {**record, "min_size": options.min_size}


def _maker(record: dict) -> tuple:
    """What a ``cells_record``'s setting depends on: method, quantile (None without one) and fragments."""
    return record.get("method"), record.get("quantile"), record.get("fragments")


def made_by(record: dict) -> str:
    """A ``cells_record``'s method, quantile where it has one, and fragments, in words."""
    method, quantile, fragments = _maker(record)
    return f"{method!r}{'' if quantile is None else f' (quantile {quantile})'} with fragments {fragments}"


def with_summary_setting(summary: dict, options: SegmentationOptions, where) -> SegmentationOptions:
    """``options`` with the V_rand setting of the summary's cells, where the config left it null. The summary's
    cells must have been made by the same method and fragments; the setting was chosen on its validation
    sections (``stages.evaluate``). ``where`` names the summary in errors."""
    if options.setting is not None:
        return options
    try:
        cells = summary["cells"]
        value = cells["metrics"]["v_rand"]["threshold"]
    except (KeyError, TypeError) as error:
        raise InputDataError(f"{where}: no V_rand setting of the cells in this evaluation summary ({error!r})")
    configured = cells_record(options)
    if _maker(cells) != _maker(configured):
        raise InputDataError(
            f"{where}: its cells were made by {made_by(cells)}, not by the configured {made_by(configured)}; "
            "rerun the evaluate rule"
        )
    if options.dimensions == 3:
        log.warning("%s: 3D cells take the setting chosen for 2D cells on the validation sections (%s)", where, value)
    return options.with_setting(value)
