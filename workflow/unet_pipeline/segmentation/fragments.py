"""Fragments: an over-segmentation of one section by a seeded watershed on the boundary map 1 - p.

The seeds are the maxima of the smoothed distance transform of the pixels below a boundary
threshold, the flooded height blends the smoothed boundary map with the inverted distance
(Beier et al. 2017, "Multicut brings automated neurite segmentation closer to human
performance"); fragments under ``min_size`` pixels are flooded by their neighbours. elf's
``distance_transform_watershed`` (bioimage-cpp underneath) does all of it: a maintained
implementation of the recipe that the field's multicut pipelines use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.defaults import defaults_from_schema


@dataclass(frozen=True)
@defaults_from_schema("segmentation/fragments")
class FragmentOptions:
    """The watershed's settings (defaults: the schema's ``segmentation.fragments``)."""

    threshold: float
    sigma_seeds: float
    sigma_weights: float
    alpha: float
    min_size: int


def fragments(boundary: np.ndarray, options: FragmentOptions) -> np.ndarray:
    """Over-segmentation of one section.

    Args:
        boundary: (y, x) float32 boundary probability 1 - p, in [0, 1].
        options: the watershed's settings.

    Returns:
        (y, x) uint32 fragment ids 1..n covering every pixel (no background).
    """
    from elf.segmentation.watershed import distance_transform_watershed

    if not (boundary <= options.threshold).any():  # all boundary: no distance to seed from (elf would divide by 0)
        return np.ones(boundary.shape, np.uint32)
    labels, _ = distance_transform_watershed(
        np.ascontiguousarray(boundary, np.float32),
        threshold=options.threshold,
        sigma_seeds=options.sigma_seeds,
        sigma_weights=options.sigma_weights,
        min_size=options.min_size,
        alpha=options.alpha,
    )
    return labels.astype(np.uint32)
