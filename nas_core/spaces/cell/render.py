"""Pictures of the cell space: a genotype's cells (graphviz when its ``dot``
binary is installed, else matplotlib) and heatmaps of the (14, n_ops)
op-probability tables."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from nas_core.io import atomic_path
from nas_core.spaces.cell.genotype import EDGES, KINDS, NUM_EDGES, NUM_INPUTS, NUM_NODES, Cell, CellGenotype

Panel = tuple[str, Cell, Sequence[int]]


def render_genotype(genotype: CellGenotype, path: str | Path, title: str = "") -> Path:
    """Both cells of ``genotype`` in one PNG (normal above reduction)."""
    panels = [(f"{title} {kind}".strip(), getattr(genotype, kind), getattr(genotype, f"{kind}_concat"))
              for kind in KINDS]
    return _render(panels, Path(path))


def render_cell(cell: Cell, concat: Sequence[int], path: str | Path, title: str = "") -> Path:
    """One cell to PNG."""
    return _render([(title, cell, concat)], Path(path))


def _render(panels: list[Panel], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if shutil.which("dot"):
        try:
            return _render_graphviz(panels, path)
        except Exception:  # noqa: BLE001 - a broken graphviz install falls back to matplotlib
            pass
    return _render_matplotlib(panels, path)


def node_label(n: int) -> str:
    return {0: "c_k-2", 1: "c_k-1"}.get(n, f"n{n - NUM_INPUTS}")


def _render_graphviz(panels: list[Panel], path: Path) -> Path:
    import graphviz

    g = graphviz.Digraph(format="png", graph_attr={"rankdir": "LR"})
    for p, (title, cell, concat) in enumerate(panels):
        with g.subgraph(name=f"cluster_{p}", graph_attr={"label": title}) as sub:
            def name(n: object, panel: int = p) -> str:  # node ids unique per panel
                return f"{panel}_{n}"

            for n in {0, 1, *range(NUM_INPUTS, NUM_INPUTS + NUM_NODES)}:
                sub.node(name(n), node_label(n))
            sub.node(name("out"), "c_k")
            for i, (op, src) in enumerate(cell):
                sub.edge(name(src), name(NUM_INPUTS + i // NUM_INPUTS), label=op)
            for n in concat:
                sub.edge(name(n), name("out"))
    with atomic_path(path) as tmp:
        tmp.write_bytes(g.pipe(format="png"))
    return path


def _render_matplotlib(panels: list[Panel], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 4 * len(panels)), squeeze=False)
    for ax, (title, cell, concat) in zip(axes[:, 0], panels):
        _draw_cell(ax, cell, concat, title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _draw_cell(ax: Any, cell: Cell, concat: Sequence[int], title: str) -> None:
    """Nodes in a left-to-right layered layout."""
    pos: dict[Any, tuple[float, float]] = {0: (0.0, 1.0), 1: (0.0, -1.0), "out": (NUM_NODES + 1.0, 0.0)}
    for k in range(NUM_NODES):
        pos[NUM_INPUTS + k] = (1.0 + k, 0.9 if k % 2 == 0 else -0.9)
    for i, (op, src) in enumerate(cell):
        _arrow(ax, pos[src], pos[NUM_INPUTS + i // NUM_INPUTS], op, offset=0.12 * (i % 2) - 0.06)
    for n in concat:
        _arrow(ax, pos[n], pos["out"], "", offset=0.0, color="0.6")
    labels = {0: "c_k-2", 1: "c_k-1", "out": "c_k"}
    for node, (x, y) in pos.items():
        colour = "#9ecae1" if node in (0, 1) else "#fdd0a2" if node == "out" else "#e5e5e5"
        ax.text(x, y, labels.get(node, node_label(node) if isinstance(node, int) else node),
                ha="center", va="center", fontsize=10,
                bbox={"boxstyle": "round", "facecolor": colour, "edgecolor": "0.3"})
    ax.set_xlim(-0.5, NUM_NODES + 1.5)
    ax.set_ylim(-1.6, 1.6)
    ax.axis("off")
    ax.set_title(title)


def _arrow(ax: Any, start, end, label: str, offset: float, color: str = "0.2") -> None:
    rad = offset + 0.15
    ax.annotate("", xy=end, xytext=start,
                arrowprops={"arrowstyle": "->", "color": color, "shrinkA": 14, "shrinkB": 14,
                            "connectionstyle": f"arc3,rad={rad}"})
    if label:  # midpoint of matplotlib's arc3 quadratic Bezier curve
        dx, dy = end[0] - start[0], end[1] - start[1]
        mx, my = (start[0] + end[0]) / 2 + 0.5 * rad * dy, (start[1] + end[1]) / 2 - 0.5 * rad * dx
        ax.text(mx, my, label, fontsize=7, ha="center", va="center", color="#08519c",
                bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.8})


def plot_cell_probabilities(probabilities: Mapping[str, np.ndarray], op_names: Sequence[str], title: str = ""):
    """Heatmaps of the (14, n_ops) op-probability tables, one per cell kind;
    returns the matplotlib figure (the caller saves or logs it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in KINDS if k in probabilities]
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.5 * len(kinds), 5), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        image = ax.imshow(probabilities[kind], cmap="viridis", aspect="auto")  # auto scale: early
        ax.set_xticks(range(len(op_names)), op_names, rotation=60, ha="right", fontsize=7)  # tables are flat
        ax.set_yticks(range(NUM_EDGES), [f"{node_label(n)} <- {node_label(s)}" for n, s in EDGES], fontsize=7)
        ax.set_title(f"{title} {kind}".strip())
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig
