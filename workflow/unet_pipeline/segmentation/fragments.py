"""Fragments: an over-segmentation of a section (or volume) by a seeded watershed on the boundary map 1 - p.

The recipe of Beier et al. 2017 ("Multicut brings automated neurite segmentation closer to human
performance"), as elf's ``distance_transform_watershed`` implements it: seeds at the maxima of the
smoothed distance transform of the pixels below a boundary threshold; a flooded height that blends
the smoothed boundary map with the inverted distance; fragments under ``min_size`` pixels flooded
by their neighbours. Written here from scipy and scikit-image, with two changes that make a block's
fragments those of the whole section wherever its halo covers what they depend on, but for the order in
which the watershed floods pixels of equal height (``segmentation.blockwise``):

- the distance is inverted on a fixed scale (``distance_scale`` pixels), where elf divides by the
  maximum of its input, which differs from block to block;
- each fragment's id is its seed's key: the smallest global index of the seed's pixels, so two
  blocks that see the same seed give its fragment the same id without matching.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

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
    distance_scale: float


@dataclass(frozen=True)
class Region:
    """Where an array lies in the whole: its ``origin`` in the global ``shape``, and which of its faces are
    cuts through the whole (``cut``: (low, high) per axis) rather than the whole's own border."""

    origin: tuple
    shape: tuple
    cut: tuple

    @classmethod
    def whole(cls, shape) -> Region:
        return cls((0,) * len(shape), tuple(shape), ((False, False),) * len(shape))


def relative_spacing(spacing) -> tuple:
    """A pixel spacing in units of the last axis's (x) pixels: distances and smoothing are in x pixels."""
    return tuple(float(s) / float(spacing[-1]) for s in spacing)


def height_map(boundary: np.ndarray, options: FragmentOptions, spacing=None) -> tuple[np.ndarray, np.ndarray]:
    """The smoothed distance transform of the non-boundary pixels (for the seeds), and the flooded height.
    Distances and smoothing are in pixels of x (``spacing``: relative, ``relative_spacing``)."""
    spacing = spacing or (1.0,) * boundary.ndim
    distance = ndimage.distance_transform_edt(boundary <= options.threshold, sampling=spacing).astype(np.float32)
    if options.sigma_seeds:
        distance = ndimage.gaussian_filter(distance, [options.sigma_seeds / s for s in spacing])
    smoothed = boundary
    if options.sigma_weights:
        smoothed = ndimage.gaussian_filter(boundary, [options.sigma_weights / s for s in spacing])
    inverted = 1.0 - distance / np.float32(options.distance_scale)
    return distance, (options.alpha * smoothed + (1.0 - options.alpha) * inverted).astype(np.float32)


def seeds(distance: np.ndarray, region: Region) -> tuple[np.ndarray, np.ndarray]:
    """Seeds: the plateaus of local maxima of ``distance`` above 0 (8- or 26-connected).

    Returns:
        int32 seed labels 1..n (0: no seed), and each label's key (index 0 unused): the smallest global
        index of its pixels, uint64.
    """
    peaks = (distance == ndimage.maximum_filter(distance, size=3, mode="nearest")) & (distance > 0)
    labels, count = ndimage.label(peaks, structure=np.ones((3,) * distance.ndim))
    return labels.astype(np.int32), smallest_index(labels, count, region.origin, region.shape)


def smallest_index(labels: np.ndarray, count: int, origin: tuple, shape: tuple) -> np.ndarray:
    """For labels 1..count of an array placed at ``origin`` in a whole of ``shape``: each label's smallest global
    C-order index (uint64; index 0 of the result, for label 0, is unused)."""
    keys = np.full(count + 1, np.iinfo(np.uint64).max, np.uint64)
    where = np.nonzero(labels)
    flat = np.ravel_multi_index(tuple(w + o for w, o in zip(where, origin)), shape)
    np.minimum.at(keys, labels[where], flat.astype(np.uint64))
    return keys


def _on_cut_faces(labels: np.ndarray, region: Region) -> np.ndarray:
    """The ids on the faces that cut through the whole: their fragments go on beyond this array."""
    ids = [np.zeros(0, labels.dtype)]
    for axis, (low, high) in enumerate(region.cut):
        for side, is_cut in ((0, low), (-1, high)):
            if is_cut:
                ids.append(np.unique(np.take(labels, side, axis=axis)))
    return np.unique(np.concatenate(ids))


def fragments(boundary: np.ndarray, options: FragmentOptions, region: Region | None = None, spacing=None):
    """Over-segmentation of a section (y, x) or volume (z, y, x).

    Args:
        boundary: float32 boundary probability 1 - p, in [0, 1].
        options: the watershed's settings.
        region: where ``boundary`` lies in the whole (default: it is the whole). A fragment touching a cut
            face is never flooded as small: its size is not known here.
        spacing: the pixel spacing per axis relative to x's (``relative_spacing``; default: isotropic).

    Returns:
        uint64 fragment ids covering every pixel (no background): 1 + the key of the fragment's seed (``seeds``).
    """
    region = region or Region.whole(boundary.shape)
    boundary = np.asarray(boundary, np.float32)
    distance, height = height_map(boundary, options, spacing)
    markers, keys = seeds(distance, region)
    if len(keys) == 1:  # all boundary: nothing to seed from, one fragment keyed by the array's first pixel
        return np.full(boundary.shape, np.ravel_multi_index(region.origin, region.shape) + 1, np.uint64)
    from skimage.segmentation import watershed

    labels = watershed(height, markers)
    if options.min_size:
        sizes = np.bincount(labels.ravel(), minlength=len(keys))
        small = sizes < options.min_size
        small[0] = small[_on_cut_faces(labels, region)] = False
        if small.any() and not small[1:].all():
            labels = watershed(height, np.where(small[labels], 0, labels))
    return keys[labels] + np.uint64(1)  # + 1: 0 is the key of the first pixel
