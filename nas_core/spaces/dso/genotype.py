"""A DSO-NAS architecture as a value (STYLE.md 1): the set of kept
connections of each block structure (one structure shared by every normal
block in the *share* scope, one per normal block in the *full* scope).

JSON: ``{"space": "dso", "scope": ..., "levels": M, "ops": [...],
"kept": [[label, ...] per structure]}``, each label ``"src->dst"`` with
nodes named ``in``, ``out`` or ``<level>.<op>`` (nas_core.spaces.dso.graph).
The genotype is the connection set as searched; isolated nodes are dropped
when a network is built from it, not from the genotype, so flipping one
connection is always one change of the encoding.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from nas_core.registry import nearest
from nas_core.spaces.base import GenotypeError
from nas_core.spaces.dso.graph import BlockGraph, block_graph

SPACE_NAME = "dso"
SCOPES = ("share", "full")
_KEYS = ("kept", "levels", "ops", "scope", "space")


@dataclass(frozen=True)
class DSOGenotype:
    """``kept[s]``: sorted indices (into ``BlockGraph.edges``) of the kept
    connections of structure s."""

    scope: str
    levels: int
    ops: tuple[str, ...]
    kept: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(self.ops))
        object.__setattr__(self, "kept", tuple(tuple(sorted(int(e) for e in s)) for s in self.kept))
        if self.scope not in SCOPES:
            raise GenotypeError(f"dso genotype scope = {self.scope!r}: allowed {', '.join(SCOPES)}")
        edges = self.graph.num_edges
        for s, kept in enumerate(self.kept):
            if len(set(kept)) != len(kept) or (kept and not 0 <= kept[0] <= kept[-1] < edges):
                raise GenotypeError(f"dso genotype structure {s}: connection indices {list(kept)} must be distinct "
                                    f"and in 0..{edges - 1}")

    @property
    def graph(self) -> BlockGraph:
        return block_graph(self.levels, self.ops)

    def masks(self) -> np.ndarray:
        """(structures, E) bool: kept connections."""
        out = np.zeros((len(self.kept), self.graph.num_edges), dtype=bool)
        for s, kept in enumerate(self.kept):
            out[s, list(kept)] = True
        return out

    @property
    def num_kept(self) -> int:
        return sum(len(k) for k in self.kept)

    def __str__(self) -> str:
        graph = self.graph
        parts = [f"[{len(k)}/{graph.num_edges}] " + " ".join(graph.labels[e] for e in k) for k in self.kept]
        return f"dso-{self.scope} M={self.levels}: " + " | ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        labels = self.graph.labels
        return {"space": SPACE_NAME, "scope": self.scope, "levels": self.levels, "ops": list(self.ops),
                "kept": [[labels[e] for e in k] for k in self.kept]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, obj: Any) -> "DSOGenotype":
        if not isinstance(obj, Mapping) or tuple(sorted(obj)) != _KEYS:
            got = sorted(obj) if isinstance(obj, Mapping) else type(obj).__name__
            raise GenotypeError(f"a dso genotype is an object with keys {list(_KEYS)}, got {got}")
        if obj["space"] != SPACE_NAME:
            raise GenotypeError(f"genotype of space {obj['space']!r}: expected {SPACE_NAME!r}")
        ops, kept = obj["ops"], obj["kept"]
        if not isinstance(ops, list) or not all(isinstance(o, str) for o in ops) or not isinstance(kept, list) \
                or not all(isinstance(k, list) for k in kept):
            raise GenotypeError("dso genotype: 'ops' must be a list of op names and 'kept' a list of label lists")
        if not isinstance(obj["levels"], int) or obj["levels"] < 1:
            raise GenotypeError(f"dso genotype levels = {obj['levels']!r}: expected an integer >= 1")
        graph = block_graph(obj["levels"], tuple(ops))
        return cls(obj["scope"], obj["levels"], tuple(ops), tuple(_indices(graph, s, k) for s, k in enumerate(kept)))


def _indices(graph: BlockGraph, structure: int, labels: list) -> tuple[int, ...]:
    out = []
    for label in labels:
        if label not in graph.label_index:
            hint = nearest(str(label), list(graph.labels))
            did = f"; did you mean {hint!r}?" if hint else ""
            raise GenotypeError(f"dso genotype structure {structure}: unknown connection {label!r}{did}")
        out.append(graph.label_index[label])
    return tuple(out)
