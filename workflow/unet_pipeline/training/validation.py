"""Validation during training: the network scored on whole validation sections."""

from __future__ import annotations

import numpy as np

from ..data import volume_store
from ..inference.overlap_tile import TilePredictor
from ..metrics import validation_scores
from ..transforms.cells import cells_of


def validate(predictor: TilePredictor, volume, sections) -> dict:
    """Misclassified fraction, V_rand (ISBI style) and foreground IoU at threshold 0.5, averaged over ``sections``.

    Args:
        predictor: the network in eval mode with its tile settings.
        volume: the dataset's volume store (image, labels and their type).
        sections: the validation sections, predicted whole with the overlap-tile strategy.
    """
    image, labels = volume[volume_store.IMAGE_PATH], volume[volume_store.LABELS_PATH]
    label_type = volume_store.provenance(volume)["labels"]["type"]
    scores = [validation_scores(predictor.section(image[z]), cells_of(labels[z], label_type)) for z in sections]
    # nanmean: a section without true cells has no V_rand (metrics docstring) but still a pixel score.
    return {name: float(np.nanmean([score[name] for score in scores])) for name in scores[0]}
