"""ISBI 2012 scores exactly as the organisers' Fiji code computes them (Trainable_Segmentation).

This docstring is the one place that defines the scores; the README and the
report point here. Inputs per section: a foreground (cell interior) probability
map p in [0, 1] (float32) and ground-truth labels (> 0 = cell interior; the true
cells are their 4-connected components, or the ids of instance labels).

Thresholds. Fiji loops ``for (th = 0.0; th <= 1.0; th += 0.1)`` in double, so the
eleven thresholds are 0.0, 0.1, 0.2, 0.30000000000000004, ..., 0.9999999999999999,
and a pixel is proposed foreground where ``(double) p > th``. Both are kept
(``scores.FIJI_THRESHOLDS``); tables label them 0.0, 0.1, ..., 1.0. With uint8
predictions (p = k / 255 in float32) this decides e.g. that p = 51/255 is above 0.2
and that p = 1.0 is still foreground at the last threshold.

Per section and threshold:

- Proposed cells: the 4-connected components of the foreground. For V_rand and
  V_info their borders are thinned to 1-px lines by flooding the image
  "border 255, cells 0" with Fiji's Vincent-Soille watershed (``thinning``).
- Contingency: only pixels inside true cells count (n of them); p_ij is the
  fraction in true cell i and proposed cell j > 0, a_i = sum_j p_ij over all j,
  b_j = sum_i p_ij, and each pixel with proposal label 0 (a watershed line, or
  unthinned border) inside a true cell is a singleton segment of its own,
  aux = sum_i p_i0.
- V_rand (``RandError``, foreground-restricted, after thinning): with
  tp = n^2 (sum p_ij^2 + aux / n), fp = n^2 (sum b_j^2 + aux / n) - tp and
  fn = n^2 sum a_i^2 - tp, merge = tp / (tp + fp), split = tp / (tp + fn)
  (1 where fp resp. fn is 0) and V_rand = 2 merge split / (merge + split).
- V_info (``VariationOfInformation``): with H(truth) = -sum a_i log a_i,
  H(proposal) = -sum b_j log b_j + aux log n and I the mutual information,
  merge = I / H(truth), split = I / H(proposal), V_info their harmonic mean.
  Fiji's conventions for degenerate sections are kept: one true cell
  (H(truth) = 0) or one proposed segment (H(proposal) = 0) scores 0.
- Rand error of the paper's Table 1 (``getForegroundRestrictedRandIndexMaximalFScore``):
  the same counts on the unthinned proposal cells; background pixels of the
  proposal inside true cells are singletons, not one segment.
- Pixel error (``PixelError``): counts tp, fp, fn of the foreground pixels.
- Warping error (``WarpingError``, Jain et al. 2010): topological mismatches
  left after warping the truth towards the proposal by simple-point flips,
  over the number of pixels (``warping``).

Stack (several sections) at each threshold, as Fiji's stack methods form it:
V_rand, V_info (with their parts: V_rand's split and merge from tp, fp, fn summed
over the sections, Fiji's ``ClassificationStatistics`` of the stack; V_info's as
means) and the warping error are means of per-section values; the Rand error
is 1 - F of the pair counts summed over sections, the pixel error 1 - F of the
pixel counts summed over sections. The challenge reports, for each score, its
best value over the thresholds (maximal F-scores, minimal warping error); the
first threshold that reaches it wins ties.

Decided where Fiji has no answer: a section without any true cell has no V_rand,
V_info or Rand error (NaN in its rows; Fiji would give 0 and NaN); stack values
are over the sections with cells. The pixel and warping errors count it.

Instance labels (cells, as the segment stage writes them) are scored as the
proposal "foreground = id > 0", p = 1.0 inside cells and 0.0 elsewhere, at
threshold 0.5 (any threshold in (0, 1) gives the same). So that this proposal
is exactly the cells, the cells carry 1-px lines of id 0 between them, made by
the thinning above repeated until it changes nothing: then 4-connectivity
(Table-1 Rand error) and thinning (V_rand, V_info) of their foreground give
back the same cells (``segmentation.proposal``, which also carves the lines
into a partition whose cells touch; the round trip is tested there). The
segment stage's submission TIFF of the cells is this p.

Beyond Fiji, each row also carries the misclassified fraction and the
foreground IoU (pooled over sections), which training uses to select
checkpoints. Run ``python -m unet_pipeline.metrics --help`` to score TIFF stacks
or a prediction store from the command line.
"""

from .scores import FIJI_THRESHOLDS, FIXED_THRESHOLD, THRESHOLDS, section_scores, validation_scores
from .summary import HIGHER_IS_BETTER, PARTS, summarise

__all__ = [
    "FIJI_THRESHOLDS",
    "FIXED_THRESHOLD",
    "HIGHER_IS_BETTER",
    "PARTS",
    "THRESHOLDS",
    "section_scores",
    "summarise",
    "validation_scores",
]
