"""The DARTS cell search space (Liu et al., ICLR 2019).

A cell is a DAG with 2 input nodes (the outputs of the two previous cells,
numbered 0 and 1) and ``NUM_NODES`` = 4 intermediate nodes (2..5); node
``i`` takes an input from every earlier node, so there are 2+3+4+5 = 14
edges, listed in :data:`EDGES` in the order the supernet stores them. The
cell output is the channel concatenation of the intermediate nodes.

Candidate-op sets are named (:data:`OP_SETS`): ``darts`` (= ``S1``) and the
StacNAS variants ``S2``-``S5`` (stacnas.md §3.2).

A genotype keeps, per intermediate node, two ``(op, input)`` pairs, for the
normal and the reduction cell (DARTS ``genotypes.py``). Derivation rule
(DARTS §2.4): per node keep the 2 incoming edges with the largest
strength = max weight over the non-zero ops; on each kept edge the op is the
argmax excluding ``none``.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from nas_core.registry import Registry

NUM_NODES = 4
NUM_INPUTS = 2
ZERO = "none"
SKIP = "skip_connect"

# (node, input) per edge: node in 2..5, input in 0..node-1.
EDGES: tuple[tuple[int, int], ...] = tuple(
    (node, src) for node in range(NUM_INPUTS, NUM_INPUTS + NUM_NODES) for src in range(node))
NUM_EDGES = len(EDGES)

OP_SETS: Registry[tuple[str, ...]] = Registry("cell op set")
_S1 = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
       "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
OP_SETS.register("darts")(_S1)
OP_SETS.register("S1")(_S1)
OP_SETS.register("S2")(("none", "max_pool_3x3", "max_pool_5x5", "avg_pool_3x3", "avg_pool_5x5",
                         "skip_connect", "sep_conv_3x3", "sep_conv_5x5"))
OP_SETS.register("S3")(("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
                         "sep_conv_7x7", "dil_conv_3x3", "dil_conv_5x5"))
OP_SETS.register("S4")(("none", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
                         "dil_conv_3x3", "dil_conv_5x5"))
OP_SETS.register("S5")(("none", "skip_connect", "sep_conv_3x3"))


def op_set(name: str) -> tuple[str, ...]:
    """The op names of a registered set; an unknown name is a clear error."""
    try:
        return OP_SETS.get(name)
    except KeyError as exc:
        raise ValueError(f"search.cell.op_set: {exc}") from None


def edge_index(node: int, src: int) -> int:
    return EDGES.index((node, src))


def node_edges(node: int) -> range:
    """Indices into :data:`EDGES` of the edges entering ``node`` (2..5)."""
    start = sum(range(NUM_INPUTS, node))
    return range(start, start + node)


@dataclass(frozen=True)
class CellSpace:
    """What a cell strategy needs to know about the space and the data."""

    op_set: str
    input_channels: int
    num_classes: int

    @property
    def op_names(self) -> tuple[str, ...]:
        return op_set(self.op_set)


Cell = tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class CellGenotype:
    """Normal and reduction cell: per intermediate node two ``(op, input)``
    pairs (node order), plus the concatenated nodes."""

    normal: Cell
    reduce: Cell
    normal_concat: tuple[int, ...] = tuple(range(NUM_INPUTS, NUM_INPUTS + NUM_NODES))
    reduce_concat: tuple[int, ...] = tuple(range(NUM_INPUTS, NUM_INPUTS + NUM_NODES))

    def __post_init__(self) -> None:
        for kind in ("normal", "reduce"):
            cell = tuple((str(op), int(src)) for op, src in getattr(self, kind))
            object.__setattr__(self, kind, cell)
            _check_cell(kind, cell)
            concat = tuple(int(n) for n in getattr(self, f"{kind}_concat"))
            object.__setattr__(self, f"{kind}_concat", concat)
            if not concat or any(not NUM_INPUTS <= n < NUM_INPUTS + NUM_NODES for n in concat):
                raise ValueError(f"{kind}_concat = {concat}: node ids must be in 2..{NUM_INPUTS + NUM_NODES - 1}")

    def count(self, op: str, kind: str = "normal") -> int:
        return sum(1 for name, _ in getattr(self, kind) if name == op)

    def to_dict(self) -> dict:
        return {"normal": [list(p) for p in self.normal], "normal_concat": list(self.normal_concat),
                "reduce": [list(p) for p in self.reduce], "reduce_concat": list(self.reduce_concat)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> "CellGenotype":
        missing = {"normal", "reduce"} - set(data)
        if missing:
            raise ValueError(f"cell genotype: missing keys {sorted(missing)} (have {sorted(data)})")
        return cls(normal=tuple(tuple(p) for p in data["normal"]),
                   reduce=tuple(tuple(p) for p in data["reduce"]),
                   normal_concat=tuple(data.get("normal_concat", range(2, 6))),
                   reduce_concat=tuple(data.get("reduce_concat", range(2, 6))))

    @classmethod
    def from_json(cls, text: str) -> "CellGenotype":
        return cls.from_dict(json.loads(text))


def _check_cell(kind: str, cell: Cell) -> None:
    from nas_core.spaces.cell_ops import CELL_OPS

    if len(cell) != NUM_INPUTS * NUM_NODES:
        raise ValueError(f"{kind} cell: expected {NUM_INPUTS * NUM_NODES} (op, input) pairs, got {len(cell)}")
    for i, (op, src) in enumerate(cell):
        node = NUM_INPUTS + i // NUM_INPUTS
        if op not in CELL_OPS or op == ZERO:
            raise ValueError(f"{kind} cell, node {node}: op {op!r} is not allowed "
                             f"(allowed: {', '.join(n for n in CELL_OPS.names() if n != ZERO)})")
        if not 0 <= src < node:
            raise ValueError(f"{kind} cell, node {node}: input {src} must be in 0..{node - 1}")


def derive_cell(weights: np.ndarray, op_names: Sequence[str] | Sequence[Sequence[str]]) -> Cell:
    """DARTS rule on a (14, n_ops) weight table. ``op_names`` is one list
    for all edges or one list per edge (P-DARTS prunes ops per edge).
    Ties break towards the lower edge / op index (deterministic)."""
    weights = np.asarray(weights, dtype=np.float64)
    per_edge = _per_edge_names(op_names)
    if weights.shape != (NUM_EDGES, len(per_edge[0])):
        raise ValueError(f"cell weights: expected shape ({NUM_EDGES}, {len(per_edge[0])}), got {weights.shape}")
    cell: list[tuple[str, int]] = []
    for node in range(NUM_INPUTS, NUM_INPUTS + NUM_NODES):
        edges = list(node_edges(node))
        strength = [_best_nonzero(weights[e], per_edge[e])[1] for e in edges]
        top = sorted(range(len(edges)), key=lambda k: (-strength[k], k))[:NUM_INPUTS]
        for k in sorted(top):
            op_idx, _ = _best_nonzero(weights[edges[k]], per_edge[edges[k]])
            cell.append((per_edge[edges[k]][op_idx], EDGES[edges[k]][1]))
    return tuple(cell)


def _per_edge_names(op_names) -> list[tuple[str, ...]]:
    if op_names and isinstance(op_names[0], str):
        return [tuple(op_names)] * NUM_EDGES
    if len(op_names) != NUM_EDGES:
        raise ValueError(f"per-edge op names: expected {NUM_EDGES} lists, got {len(op_names)}")
    return [tuple(names) for names in op_names]


def _best_nonzero(row: np.ndarray, names: Sequence[str]) -> tuple[int, float]:
    candidates = [j for j, name in enumerate(names) if name != ZERO]
    if not candidates:
        raise ValueError(f"an edge has no non-zero op (ops: {list(names)})")
    best = max(candidates, key=lambda j: (row[j], -j))
    return best, float(row[best])


def cap_skips(weights: np.ndarray, op_names: Sequence, cap: Optional[int]) -> tuple[Cell, np.ndarray]:
    """P-DARTS's skip-connect cap: while the derived cell has more than
    ``cap`` skip-connects, zero the weakest kept skip-connect weight and
    derive again. Returns the cell and the edited weights."""
    weights = np.array(weights, dtype=np.float64, copy=True)
    per_edge = _per_edge_names(op_names)
    cell = derive_cell(weights, per_edge)
    while cap is not None and sum(op == SKIP for op, _ in cell) > cap:
        kept = _kept_edges(cell)
        skips = [(weights[e][per_edge[e].index(SKIP)], e) for e, op in kept if op == SKIP]
        _, weakest = min(skips)
        weights[weakest][per_edge[weakest].index(SKIP)] = 0.0
        cell = derive_cell(weights, per_edge)
    return cell, weights


def _kept_edges(cell: Cell) -> list[tuple[int, str]]:
    return [(edge_index(NUM_INPUTS + i // NUM_INPUTS, src), op) for i, (op, src) in enumerate(cell)]


def derive_genotype(normal: np.ndarray, reduce: np.ndarray, op_names,
                    reduce_op_names=None, skip_cap: Optional[int] = None) -> CellGenotype:
    """Both cells by the DARTS rule; ``skip_cap`` applies to the normal
    cell only (P-DARTS)."""
    normal_cell, _ = cap_skips(normal, op_names, skip_cap)
    reduce_cell = derive_cell(reduce, reduce_op_names if reduce_op_names is not None else op_names)
    return CellGenotype(normal=normal_cell, reduce=reduce_cell)


def render_cell(cell: Cell, concat: Sequence[int], path: str | Path, title: str = "") -> Path:
    """Draw a cell to PNG: graphviz when its ``dot`` binary is installed,
    else matplotlib (nodes in a left-to-right layered layout)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if shutil.which("dot"):
        try:
            return _render_graphviz(cell, concat, path, title)
        except Exception:  # noqa: BLE001 - a broken graphviz install falls back to matplotlib
            pass
    return _render_matplotlib(cell, concat, path, title)


def _node_label(n: int) -> str:
    return {0: "c_k-2", 1: "c_k-1"}.get(n, f"n{n - NUM_INPUTS}")


def _render_graphviz(cell: Cell, concat: Sequence[int], path: Path, title: str) -> Path:
    import graphviz

    from nas_core.io import atomic_path

    g = graphviz.Digraph(format="png", graph_attr={"rankdir": "LR", "label": title})
    for i, (op, src) in enumerate(cell):
        g.edge(_node_label(src), _node_label(NUM_INPUTS + i // NUM_INPUTS), label=op)
    for n in concat:
        g.edge(_node_label(n), "c_k")
    with atomic_path(path) as tmp:
        tmp.write_bytes(g.pipe(format="png"))
    return path


def _render_matplotlib(cell: Cell, concat: Sequence[int], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nas_core.io import atomic_path

    pos = {0: (0.0, 1.0), 1: (0.0, -1.0), "out": (NUM_NODES + 1.0, 0.0)}
    for k in range(NUM_NODES):
        pos[NUM_INPUTS + k] = (1.0 + k, 0.9 if k % 2 == 0 else -0.9)
    fig, ax = plt.subplots(figsize=(9, 4))
    for i, (op, src) in enumerate(cell):
        _arrow(ax, pos[src], pos[NUM_INPUTS + i // NUM_INPUTS], op, offset=0.12 * (i % 2) - 0.06)
    for n in concat:
        _arrow(ax, pos[n], pos["out"], "", offset=0.0, color="0.6")
    labels = {0: "c_k-2", 1: "c_k-1", "out": "c_k"}
    for node, (x, y) in pos.items():
        colour = "#9ecae1" if node in (0, 1) else "#fdd0a2" if node == "out" else "#e5e5e5"
        ax.text(x, y, labels.get(node, _node_label(node) if isinstance(node, int) else node),
                ha="center", va="center", fontsize=10,
                bbox={"boxstyle": "round", "facecolor": colour, "edgecolor": "0.3"})
    ax.set_xlim(-0.5, NUM_NODES + 1.5)
    ax.set_ylim(-1.6, 1.6)
    ax.axis("off")
    ax.set_title(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _arrow(ax, start, end, label: str, offset: float, color: str = "0.2") -> None:
    rad = offset + 0.15
    ax.annotate("", xy=end, xytext=start,
                arrowprops={"arrowstyle": "->", "color": color, "shrinkA": 14, "shrinkB": 14,
                            "connectionstyle": f"arc3,rad={rad}"})
    if label:  # midpoint of matplotlib's arc3 quadratic Bezier curve
        dx, dy = end[0] - start[0], end[1] - start[1]
        mx, my = (start[0] + end[0]) / 2 + 0.5 * rad * dy, (start[1] + end[1]) / 2 - 0.5 * rad * dx
        ax.text(mx, my, label, fontsize=7, ha="center", va="center", color="#08519c",
                bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.8})


def plot_cell_probabilities(probabilities: dict[str, np.ndarray], op_names: Sequence[str], title: str = ""):
    """Heatmaps of the (14, n_ops) op-probability tables, one per cell kind;
    returns the matplotlib figure (the caller saves or logs it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in ("normal", "reduce") if k in probabilities]
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.5 * len(kinds), 5), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        image = ax.imshow(probabilities[kind], cmap="viridis", aspect="auto")  # auto scale: early
        ax.set_xticks(range(len(op_names)), op_names, rotation=60, ha="right", fontsize=7)  # tables are flat
        ax.set_yticks(range(NUM_EDGES), [f"{_node_label(n)} <- {_node_label(s)}" for n, s in EDGES], fontsize=7)
        ax.set_title(f"{title} {kind}".strip())
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig
