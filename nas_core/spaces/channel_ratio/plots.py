"""Pictures of the channel-ratio space: a genotype as bars of its six layer
widths next to the base widths, and a probability table as a heatmap
(layers × ratios)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from nas_core.io import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def render_widths(widths: Sequence[int], base_widths: Sequence[int], ratios: Sequence[float],
                  path: str | Path, title: str = "") -> Path:
    """Grouped bars per layer: base width and chosen width (labelled with
    its ratio), written atomically to a PNG at ``path``."""
    plt = _pyplot()
    path = Path(path)
    x = np.arange(len(widths))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(x - 0.2, base_widths, width=0.4, color="0.75", label="base width")
    bars = ax.bar(x + 0.2, widths, width=0.4, color="tab:blue", label="width")
    for bar, ratio in zip(bars, ratios):
        ax.annotate(f"×{ratio:g}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, [f"conv{i + 1}" for i in x])
    ax.set_ylabel("output channels")
    ax.set_title(title or "channel ratios: " + ", ".join(f"{r:g}" for r in ratios))
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def table_heatmap(table: np.ndarray, ratios: Sequence[float], title: str = ""):
    """A figure of the (layers, ratios) probability table."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.0 * len(ratios) + 2, 3.5))
    image = ax.imshow(table, cmap="viridis", aspect="auto", vmin=0.0)
    for (row, col), value in np.ndenumerate(table):
        ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=7, color="w")
    ax.set_xticks(range(len(ratios)), [f"{r:g}" for r in ratios])
    ax.set_yticks(range(table.shape[0]), [f"conv{i + 1}" for i in range(table.shape[0])])
    ax.set_xlabel("channel ratio")
    ax.set_title(title or "channel-ratio probabilities")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return fig
