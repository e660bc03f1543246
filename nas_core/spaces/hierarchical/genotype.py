"""Genotypes of the hierarchical space (Liu et al., ICLR 2018; nas-survey.md
Fig. 4): a level-3 DAG (the cell) whose edges carry level-2 motifs, each
motif a DAG whose edges carry level-1 primitives.

A DAG of ``n`` nodes has node 0 as its input and node ``n - 1`` as its
output; an edge (i, j) with i < j holds one op. Edges are stored in
:func:`dag_edges` order, grouped by the node they enter:
(0,1), (0,2), (1,2), (0,3), (1,3), (2,3), ...

Op names per level (index = encoding token):
- level 1 (on motif edges): ``none`` (no edge), ``identity``, ``conv_1x1``,
  ``dw_conv_3x3``, ``sep_conv_3x3``, ``max_pool_3x3``, ``avg_pool_3x3``
  (the paper's six primitives plus its ``none``);
- level 2 (on cell edges): ``none``, ``identity``, ``motif_1`` ..
  ``motif_M``. The paper's initial genotype is "a chain of identity
  mappings" at every level, so identity is an op of the cell as well.

Validity (our reading of the paper's "none" op): every non-input node has
at least one incoming edge that is not ``none``; then every node is reachable
from the input, so the output depends on the input. Nodes that do not lead
to the output are kept in the genotype but not built (network.py).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

from nas_core.spaces.base import GenotypeError

SPACE_NAME = "hierarchical"
NONE = "none"
IDENTITY = "identity"
PRIMITIVES: tuple[str, ...] = (NONE, IDENTITY, "conv_1x1", "dw_conv_3x3", "sep_conv_3x3",
                               "max_pool_3x3", "avg_pool_3x3")


def motif_name(k: int) -> str:
    """The level-2 op name of motif ``k`` (0-based index; names are 1-based as
    the paper's o_1^(2), o_2^(2), ...)."""
    return f"motif_{k + 1}"


def cell_ops(num_motifs: int) -> tuple[str, ...]:
    """The ops of a cell edge: none, identity and every motif."""
    return (NONE, IDENTITY, *(motif_name(k) for k in range(num_motifs)))


@lru_cache(maxsize=None)
def dag_edges(num_nodes: int) -> tuple[tuple[int, int], ...]:
    """All (i, j), i < j, of a ``num_nodes`` DAG, grouped by the node j they enter."""
    return tuple((i, j) for j in range(1, num_nodes) for i in range(j))


def nodes_of(num_edges: int) -> int:
    """The node count n with n (n - 1) / 2 = ``num_edges`` (GenotypeError if none)."""
    n = 2
    while n * (n - 1) // 2 < num_edges:
        n += 1
    if n * (n - 1) // 2 != num_edges:
        raise GenotypeError(f"{num_edges} edges do not form a complete DAG of any node count")
    return n


def check_dag(where: str, ops: Sequence[str], allowed: Sequence[str]) -> None:
    """GenotypeError naming ``where`` unless every op is in ``allowed`` and
    every non-input node has an incoming edge other than ``none``."""
    edges = dag_edges(nodes_of(len(ops)))
    for (i, j), op in zip(edges, ops):
        if op not in allowed:
            raise GenotypeError(f"{where}, edge {i}->{j}: op {op!r} is not allowed (allowed: {', '.join(allowed)})")
    for node in range(1, nodes_of(len(ops))):
        if all(op == NONE for (_, j), op in zip(edges, ops) if j == node):
            raise GenotypeError(f"{where}: node {node} has no incoming edge (every edge into it is 'none'); "
                                "each node after the input needs at least one")


def live_edges(ops: Sequence[str]) -> list[tuple[int, int, str]]:
    """(i, j, op) of the non-``none`` edges on a path to the output node."""
    n = nodes_of(len(ops))
    present = [(i, j, op) for (i, j), op in zip(dag_edges(n), ops) if op != NONE]
    live = {n - 1}
    for i, j, _ in sorted(present, key=lambda e: -e[1]):
        if j in live:
            live.add(i)
    return [(i, j, op) for i, j, op in present if j in live]


def used_motifs(cell: Sequence[str], num_motifs: int) -> list[int]:
    """0-based indices of the motifs on live cell edges."""
    names = {op for _, _, op in live_edges(cell)}
    return [k for k in range(num_motifs) if motif_name(k) in names]


Dag = tuple[str, ...]


@dataclass(frozen=True)
class HierarchicalGenotype:
    """Level-2 ``motifs`` (one op per edge of each motif DAG, :func:`dag_edges`
    order, level-1 names) and the level-3 ``cell`` (one op per edge of the
    cell DAG, level-2 names). Checked here: shapes, op names and validity;
    :meth:`HierarchicalSpace.genotype_from_dict` also checks the node counts
    and the number of motifs against the space."""

    motifs: tuple[Dag, ...]
    cell: Dag

    def __post_init__(self) -> None:
        try:
            motifs = tuple(tuple(str(op) for op in motif) for motif in self.motifs)
            cell = tuple(str(op) for op in self.cell)
        except TypeError:
            raise GenotypeError(f"hierarchical genotype: motifs and cell must be sequences of op names, got "
                                f"{self.motifs!r} and {self.cell!r}") from None
        if not motifs:
            raise GenotypeError("hierarchical genotype: needs at least one motif")
        if len({len(m) for m in motifs}) != 1:
            raise GenotypeError(f"hierarchical genotype: motifs have different edge counts {[len(m) for m in motifs]}")
        for k, motif in enumerate(motifs):
            check_dag(motif_name(k), motif, PRIMITIVES)
        check_dag("cell", cell, cell_ops(len(motifs)))
        object.__setattr__(self, "motifs", motifs)
        object.__setattr__(self, "cell", cell)

    def to_dict(self) -> dict[str, Any]:
        """Only the edges that exist: ``[from, to, op]`` triples per motif and
        for the cell, plus the node counts (so none-edges need not be listed)."""
        return {"space": SPACE_NAME,
                "motif_nodes": nodes_of(len(self.motifs[0])), "cell_nodes": nodes_of(len(self.cell)),
                "motifs": [_triples(m) for m in self.motifs], "cell": _triples(self.cell)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def __str__(self) -> str:
        parts = [f"{motif_name(k)}[{_edge_text(m)}]" for k, m in enumerate(self.motifs)]
        return " ".join(parts) + f" cell[{_edge_text(self.cell)}]"


def _triples(ops: Dag) -> list[list[Any]]:
    return [[i, j, op] for (i, j), op in zip(dag_edges(nodes_of(len(ops))), ops) if op != NONE]


def _edge_text(ops: Dag) -> str:
    return ", ".join(f"{i}>{j} {op}" for i, j, op in _triples(ops))


def dag_from_triples(where: str, triples: Any, num_nodes: int) -> Dag:
    """The dense op tuple of a DAG from ``[from, to, op]`` triples (missing
    edges are ``none``); GenotypeError naming ``where`` for a malformed,
    out-of-range or repeated edge."""
    if not isinstance(triples, (list, tuple)):
        raise GenotypeError(f"{where}: expected a list of [from, to, op] edges, got {triples!r}")
    edges = dag_edges(num_nodes)
    ops = [NONE] * len(edges)
    for triple in triples:
        if not (isinstance(triple, (list, tuple)) and len(triple) == 3 and isinstance(triple[2], str)
                and all(isinstance(v, int) and not isinstance(v, bool) for v in triple[:2])):
            raise GenotypeError(f"{where}: edge {triple!r} is not [from, to, op] (two node ids and an op name)")
        i, j, op = triple
        if (i, j) not in edges:
            raise GenotypeError(f"{where}: edge {i}->{j} is outside the DAG (nodes 0..{num_nodes - 1}, from < to)")
        k = edges.index((i, j))
        if ops[k] != NONE:
            raise GenotypeError(f"{where}: edge {i}->{j} is listed twice")
        ops[k] = op
    return tuple(ops)
