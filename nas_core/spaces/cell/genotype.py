"""Genotypes of the DARTS cell space (Liu et al., ICLR 2019) and the DARTS
derivation rule.

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
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from nas_core.registry import Registry, nearest
from nas_core.spaces.base import GenotypeError
from nas_core.spaces.cell.ops import CELL_OPS

SPACE_NAME = "cell"
NUM_NODES = 4
NUM_INPUTS = 2
ZERO = "none"
SKIP = "skip_connect"
KINDS = ("normal", "reduce")
NODES = tuple(range(NUM_INPUTS, NUM_INPUTS + NUM_NODES))

# (node, input) per edge: node in 2..5, input in 0..node-1.
EDGES: tuple[tuple[int, int], ...] = tuple((node, src) for node in NODES for src in range(node))
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
    """The op names of a registered set; an unknown name is a clear error
    (with the nearest registered name)."""
    try:
        return OP_SETS.get(name)
    except KeyError as exc:
        raise ValueError(f"spaces.cell.op_set: {exc}") from None


def edge_index(node: int, src: int) -> int:
    return EDGES.index((node, src))


def node_edges(node: int) -> range:
    """Indices into :data:`EDGES` of the edges entering ``node`` (2..5)."""
    start = sum(range(NUM_INPUTS, node))
    return range(start, start + node)


Cell = tuple[tuple[str, int], ...]
FULL_CONCAT = NODES


@dataclass(frozen=True)
class CellGenotype:
    """Normal and reduction cell: per intermediate node two ``(op, input)``
    pairs with distinct inputs (node order; a node's two pairs are stored
    ordered by input, so equal architectures are equal values), plus the
    concatenated nodes. Any registered
    non-zero op is accepted here; :meth:`CellSpace.genotype_from_dict`
    also checks the ops belong to the space's op set."""

    normal: Cell
    reduce: Cell
    normal_concat: tuple[int, ...] = FULL_CONCAT
    reduce_concat: tuple[int, ...] = FULL_CONCAT

    def __post_init__(self) -> None:
        for kind in KINDS:
            try:
                cell = tuple((str(op), int(src)) for op, src in getattr(self, kind))
            except (TypeError, ValueError):
                raise GenotypeError(f"{kind} cell: expected (op, input) pairs, got {getattr(self, kind)!r}") from None
            _check_cell(kind, cell)
            object.__setattr__(self, kind, _canonical(cell))
            concat = tuple(int(n) for n in getattr(self, f"{kind}_concat"))
            object.__setattr__(self, f"{kind}_concat", concat)
            if not concat or any(n not in NODES for n in concat):
                raise GenotypeError(f"{kind}_concat = {concat}: node ids must be in 2..{NODES[-1]}")

    def count(self, op: str, kind: str = "normal") -> int:
        return sum(1 for name, _ in getattr(self, kind) if name == op)

    def ops(self) -> set[str]:
        return {op for op, _ in self.normal + self.reduce}

    def __str__(self) -> str:
        parts = []
        for kind in KINDS:
            cell = getattr(self, kind)
            nodes = [" + ".join(f"{op}({src})" for op, src in cell[i:i + NUM_INPUTS])
                     for i in range(0, len(cell), NUM_INPUTS)]
            parts.append(f"{kind}: " + " | ".join(nodes))
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"space": SPACE_NAME,
                "normal": [list(p) for p in self.normal], "normal_concat": list(self.normal_concat),
                "reduce": [list(p) for p in self.reduce], "reduce_concat": list(self.reduce_concat)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Any) -> "CellGenotype":
        """The genotype of ``to_dict()`` output (other keys are ignored)."""
        if not isinstance(data, dict):
            raise GenotypeError(f"cell genotype: expected a mapping, got {type(data).__name__}")
        if data.get("space") != SPACE_NAME:
            raise GenotypeError(f"cell genotype: 'space' = {data.get('space')!r}, expected {SPACE_NAME!r}")
        missing = {"normal", "reduce"} - set(data)
        if missing:
            raise GenotypeError(f"cell genotype: missing keys {sorted(missing)} (have {sorted(data)})")
        return cls(normal=tuple(tuple(p) for p in data["normal"]),
                   reduce=tuple(tuple(p) for p in data["reduce"]),
                   normal_concat=tuple(data.get("normal_concat", FULL_CONCAT)),
                   reduce_concat=tuple(data.get("reduce_concat", FULL_CONCAT)))

    @classmethod
    def from_json(cls, text: str) -> "CellGenotype":
        return cls.from_dict(json.loads(text))


def _check_cell(kind: str, cell: Cell) -> None:
    if len(cell) != NUM_INPUTS * NUM_NODES:
        raise GenotypeError(f"{kind} cell: expected {NUM_INPUTS * NUM_NODES} (op, input) pairs, got {len(cell)}")
    allowed = [n for n in CELL_OPS.names() if n != ZERO]
    for i, (op, src) in enumerate(cell):
        node = NUM_INPUTS + i // NUM_INPUTS
        if op not in allowed:
            raise GenotypeError(f"{kind} cell, node {node}: op {op!r} is not allowed"
                                f"{did_you_mean(op, allowed)} (allowed: {', '.join(allowed)})")
        if not 0 <= src < node:
            raise GenotypeError(f"{kind} cell, node {node}: input {src} must be in 0..{node - 1}")
    for i in range(0, len(cell), NUM_INPUTS):
        if cell[i][1] == cell[i + 1][1]:
            raise GenotypeError(f"{kind} cell, node {NUM_INPUTS + i // NUM_INPUTS}: both pairs read input "
                                f"{cell[i][1]}; a node has two distinct inputs")


def _canonical(cell: Cell) -> Cell:
    """Each node's two pairs ordered by input (the same architecture, one value)."""
    return tuple(pair for i in range(0, len(cell), NUM_INPUTS)
                 for pair in sorted(cell[i:i + NUM_INPUTS], key=lambda p: p[1]))


def did_you_mean(name: str, choices: Sequence[str]) -> str:
    hint = nearest(name, list(choices))
    return f"; did you mean {hint!r}?" if hint else ""


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
