"""Stage prediction_figure: image and foreground probability of a few sections, for data with or without labels."""

from __future__ import annotations

import numpy as np

from ..core.figures import pyplot
from ..data import volume_store
from ..data.volume_store import decode_probability


def plot_predictions(prediction_path, volume_path, path, count: int = 3) -> None:
    """Image and foreground probability side by side for a few sections (for data without labels too)."""
    plt = pyplot()
    volume = volume_store.open_store(volume_path)
    probabilities = volume_store.open_store(prediction_path)[volume_store.IMAGE_PATH]
    depth = probabilities.shape[0]
    sections = sorted({round(i) for i in np.linspace(0, depth - 1, min(count, depth))})
    fig, axes = plt.subplots(2, len(sections), figsize=(4.5 * len(sections), 9), constrained_layout=True, squeeze=False)
    for column, section in enumerate(sections):
        axes[0, column].imshow(volume[volume_store.IMAGE_PATH][section], cmap="gray")
        axes[0, column].set_title(f"section {section}")
        axes[1, column].imshow(decode_probability(probabilities[section]), cmap="magma", vmin=0, vmax=1)
        axes[1, column].set_title("foreground probability")
        for axis in axes[:, column]:
            axis.set_axis_off()
    fig.savefig(path, dpi=80)
    plt.close(fig)
