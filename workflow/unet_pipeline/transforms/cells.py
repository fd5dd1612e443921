"""Cells of a label section: the objects that weight maps separate and metrics count.

Binary labels (0/1): the 4-connected components of the foreground. Instance labels:
their ids as they are, so touching instances stay separate cells.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..core.errors import InputDataError

FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


def cells_of(labels: np.ndarray, label_type: str = "binary") -> np.ndarray:
    """Cell ids of one section.

    Args:
        labels: (y, x) section of a volume store's labels: 0/1 for ``binary``, ids (0 = background) for ``instance``.
        label_type: ``binary`` or ``instance`` (the ``type`` recorded in the store's provenance).

    Returns:
        int array of the same shape, 0 = background.
    """
    if label_type == "instance":
        return labels.astype(np.int64, copy=False)
    values = np.unique(labels)
    if not np.isin(values, (0, 1)).all():
        raise InputDataError(
            f"labels hold values {values[:8].tolist()}, not 0/1; declare `type: instance` for instance labels"
        )
    cells, _ = ndimage.label(labels, structure=FOUR_CONNECTED)
    return cells
