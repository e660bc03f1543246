"""Picture of a hierarchical genotype (matplotlib): one panel per level-2
motif (its DAG of primitives) and one for the level-3 cell (its DAG of
motifs), in the spirit of nas-survey.md Fig. 4. Nodes sit on a line, input
left, output right; each present edge is an arc labelled with its op; edges
that do not reach the output are grey; motifs the cell does not use are
marked "unused"."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nas_core.io import atomic_path
from nas_core.spaces.hierarchical.genotype import (
    NONE,
    HierarchicalGenotype,
    dag_edges,
    live_edges,
    motif_name,
    nodes_of,
    used_motifs,
)

COLUMNS = 4


def render_genotype(genotype: HierarchicalGenotype, path: str | Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    used = set(used_motifs(genotype.cell, len(genotype.motifs)))
    panels = [(f"{motif_name(k)}" + ("" if k in used else " (unused)"), ops) for k, ops in enumerate(genotype.motifs)]
    panels.append(("level-3 cell", genotype.cell))
    rows = -(-len(panels) // COLUMNS)
    fig, axes = plt.subplots(rows, COLUMNS, figsize=(4.2 * COLUMNS, 2.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, ops) in zip(axes.flat, panels):
        draw_dag(ax, ops, name)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return path


def draw_dag(ax: Any, ops: Sequence[str], title: str) -> None:
    n = nodes_of(len(ops))
    live = {(i, j) for i, j, _ in live_edges(ops)}
    for (i, j), op in zip(dag_edges(n), ops):
        if op != NONE:
            _arc(ax, i, j, op.replace("motif_", "m"), "0.15" if (i, j) in live else "0.7")
    for node in range(n):
        label = "in" if node == 0 else "out" if node == n - 1 else str(node)
        colour = "#9ecae1" if node == 0 else "#fdd0a2" if node == n - 1 else "#e5e5e5"
        ax.text(node, 0, label, ha="center", va="center", fontsize=8,
                bbox={"boxstyle": "round", "facecolor": colour, "edgecolor": "0.3"})
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylim(-0.3 * n, 0.3 * n)
    ax.set_title(title, fontsize=9)


def _arc(ax: Any, i: int, j: int, label: str, colour: str) -> None:
    """A quadratic Bezier arc from node i to node j in data coordinates,
    higher for longer spans, above for odd spans and below for even ones, with
    its label at the arc's midpoint."""
    height = (0.35 if (j - i) % 2 else -0.35) * (j - i) ** 0.8
    t = np.linspace(0.12 / (j - i), 1 - 0.12 / (j - i), 30)[:, None]
    start, control, end = np.array([i, 0.0]), np.array([(i + j) / 2, height]), np.array([j, 0.0])
    curve = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t ** 2 * end
    ax.plot(curve[:, 0], curve[:, 1], color=colour, lw=1.0)
    ax.annotate("", xy=curve[-1], xytext=curve[-2], arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 1.0})
    ax.text((i + j) / 2, height / 2, label, fontsize=6, ha="center", va="center", color=colour,
            bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.8})
