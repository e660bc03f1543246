"""Pictures of the DSO-NAS space: blocks drawn with their kept connections
(Fig. 5c / Fig. 6 style: levels left to right, one row per op; used edges
solid, kept edges into isolated nodes dotted, dead nodes hollow; optional
λ as line width), the keep-probability table as a heatmap and λ per
connection over the epochs."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from nas_core.io import atomic_path
from nas_core.spaces.dso.graph import INPUT, BlockGraph

MAX_PANELS = 24


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _position(graph: BlockGraph, node: int) -> tuple[float, float]:
    middle = (graph.num_ops - 1) / 2
    if node in (INPUT, graph.output):
        return float(graph.level(node)), middle
    return float(graph.level(node)), float((node - 1) % graph.num_ops)


def draw_block(ax, graph: BlockGraph, kept: np.ndarray, weights: Optional[np.ndarray] = None,
               title: str = "") -> None:
    """One block on ``ax``; ``weights`` (E,) scale the line widths."""
    kept = np.asarray(kept, dtype=bool)
    used, live = graph.used_edges(kept), graph.live_nodes(kept)
    top = float(np.max(weights[kept])) if weights is not None and kept.any() else 1.0
    for e in np.flatnonzero(kept):
        (x0, y0), (x1, y1) = _position(graph, int(graph.sources[e])), _position(graph, int(graph.targets[e]))
        width = 0.4 + 2.0 * (float(weights[e]) / top if weights is not None and top > 0 else 0.5)
        ax.plot([x0, x1], [y0, y1], color="tab:blue" if used[e] else "0.7", lw=width,
                ls="-" if used[e] else ":", zorder=1)
    for node in range(graph.output + 1):
        x, y = _position(graph, node)
        ax.scatter([x], [y], s=120, zorder=2, color="tab:orange" if live[node] or node == INPUT else "white",
                   edgecolors="k")
    ax.set_xticks(range(graph.levels + 2), ["in", *[f"L{i}" for i in range(1, graph.levels + 1)], "out"])
    ax.set_yticks(range(graph.num_ops), graph.ops, fontsize=7)
    ax.set_title(title or f"{int(used.sum())} used / {int(kept.sum())} kept", fontsize=8)
    ax.set_xlim(-0.4, graph.levels + 1.4)
    ax.set_ylim(-0.6, graph.num_ops - 0.4)


def blocks_figure(graph: BlockGraph, masks: np.ndarray, title: str = "", weights: Optional[np.ndarray] = None,
                  names: Optional[Sequence[str]] = None):
    """Every structure (up to ``MAX_PANELS``) in one figure; ``weights``
    (structures, E) scale the line widths."""
    plt = _pyplot()
    masks = np.asarray(masks, dtype=bool)[:MAX_PANELS]
    cols = min(4, len(masks))
    rows = math.ceil(len(masks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.6 * rows + 0.4), squeeze=False)
    for s, ax in enumerate(axes.flat):
        if s >= len(masks):
            ax.axis("off")
            continue
        label = names[s] if names else (f"block {s}" if len(masks) > 1 else "")
        used = int(graph.used_edges(masks[s]).sum())
        draw_block(ax, graph, masks[s], None if weights is None else np.asarray(weights)[s],
                   f"{label}: {used} used / {int(masks[s].sum())} kept".strip(": "))
    if title:
        fig.suptitle(title[:120], fontsize=9)
    fig.tight_layout()
    return fig


def render_blocks(graph: BlockGraph, masks: np.ndarray, path: str | Path, title: str = "",
                  weights: Optional[np.ndarray] = None) -> Path:
    """:func:`blocks_figure` written atomically to a PNG at ``path``."""
    plt = _pyplot()
    fig = blocks_figure(graph, masks, title, weights)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return path


def keep_heatmap(probs: np.ndarray, title: str = ""):
    """A figure of keep probabilities (structures, E)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 1.0 + 0.3 * probs.shape[0]))
    image = ax.imshow(probs, cmap="viridis", aspect="auto", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xlabel("connection")
    ax.set_ylabel("structure")
    ax.set_title(title or "keep probability per connection")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return fig


def lambda_curves(history: np.ndarray, title: str = ""):
    """λ of every connection (lines) over the epochs: ``history``
    (epochs, structures, E)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    flat = history.reshape(history.shape[0], -1)
    epochs = np.arange(1, flat.shape[0] + 1)
    ax.plot(epochs, flat, lw=0.6, alpha=0.5)
    ax.set_xlabel("epoch")
    ax.set_ylabel("λ")
    ax.set_title(title or f"λ per connection ({flat.shape[1]})")
    fig.tight_layout()
    return fig
