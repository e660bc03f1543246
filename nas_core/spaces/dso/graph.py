"""The connections of one completely connected DSO-NAS block (dso-nas.md
§3.1, Eq. 1-2 and 5-8).

A block has M levels of N operations. Node ids: 0 is the block input,
1..M·N are the operations in level-major order (node ``(i - 1)·N + j + 1``
is op j of level i, levels counted from 1), M·N + 1 is the block output.
Every op node reads the block input and every op node of the earlier
levels; the output reads every op node. One connection (edge) is one
(source, target) pair; edges are ordered by target, then by source, so an
op of level i has ``(i - 1)·N + 1`` inputs and a block has
``(M² − M)·N²/2 + 2·M·N`` connections (128 for M = N = 4; the paper counts
124, 4 fewer, without saying which N it leaves out: here every edge has a λ).

Liveness: a node with no kept input from a live source, or with no kept
path to the output, is isolated and removed ("isolated nodes can also be
pruned as no contribution is made"); an edge is *used* when it is kept and
both its ends are live. Removing dead nodes is what makes a pruned network
the same function as the supernet with the pruned λ at zero (a node that
summed nothing would still add its BatchNorm shift).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

INPUT = 0


@dataclass(frozen=True)
class BlockGraph:
    """Connection indexing of a block with ``levels`` levels of ``ops``."""

    levels: int
    ops: tuple[str, ...]

    @property
    def num_ops(self) -> int:
        return len(self.ops)

    @property
    def num_nodes(self) -> int:
        """Operation nodes (M·N)."""
        return self.levels * self.num_ops

    @property
    def output(self) -> int:
        return self.num_nodes + 1

    def level(self, node: int) -> int:
        """Level of op node ``node`` (1..M); 0 for the input, M + 1 for the output."""
        if node == INPUT:
            return 0
        if node == self.output:
            return self.levels + 1
        return (node - 1) // self.num_ops + 1

    def op_of(self, node: int) -> str:
        return self.ops[(node - 1) % self.num_ops]

    def node_name(self, node: int) -> str:
        if node == INPUT:
            return "in"
        if node == self.output:
            return "out"
        return f"{self.level(node)}.{self.op_of(node)}"

    @cached_property
    def edges(self) -> tuple[tuple[int, int], ...]:
        """(source, target) of every connection, by target then source."""
        out = []
        for dst in range(1, self.num_nodes + 2):
            first_level = self.level(dst)
            sources = [INPUT] if dst != self.output else []
            sources += [n for n in range(1, self.num_nodes + 1) if self.level(n) < first_level]
            out += [(src, dst) for src in sources]
        return tuple(out)

    @property
    def num_edges(self) -> int:
        return len(self.edges)

    @cached_property
    def sources(self) -> np.ndarray:
        return np.array([s for s, _ in self.edges], dtype=np.int64)

    @cached_property
    def targets(self) -> np.ndarray:
        return np.array([d for _, d in self.edges], dtype=np.int64)

    @cached_property
    def labels(self) -> tuple[str, ...]:
        """``"src->dst"`` per connection (the genotype's JSON names)."""
        return tuple(f"{self.node_name(s)}->{self.node_name(d)}" for s, d in self.edges)

    @cached_property
    def label_index(self) -> dict[str, int]:
        return {label: e for e, label in enumerate(self.labels)}

    def incoming(self, node: int) -> np.ndarray:
        """Indices of the connections into ``node``."""
        return np.flatnonzero(self.targets == node)

    def live_nodes(self, kept: np.ndarray) -> np.ndarray:
        """(M·N + 2,) bool: node reached from the input through kept edges
        and reaching the output through kept edges (input and output: True
        when any op node is live)."""
        kept = self._mask(kept)
        reach = np.zeros(self.num_nodes + 2, dtype=bool)
        reach[INPUT] = True
        for node in range(1, self.num_nodes + 1):
            e = self.incoming(node)
            reach[node] = bool((kept[e] & reach[self.sources[e]]).any())
        useful = np.zeros_like(reach)
        useful[self.output] = True
        for node in range(self.num_nodes, 0, -1):
            e = np.flatnonzero(self.sources == node)
            useful[node] = bool((kept[e] & useful[self.targets[e]]).any())
        live = reach & useful
        live[INPUT] = live[self.output] = bool(live[1:self.output].any())
        return live

    def used_edges(self, kept: np.ndarray) -> np.ndarray:
        """(E,) bool: kept connections whose both ends are live."""
        kept = self._mask(kept)
        live = self.live_nodes(kept)
        return kept & live[self.sources] & live[self.targets]

    def _mask(self, kept: np.ndarray) -> np.ndarray:
        kept = np.asarray(kept)
        if kept.shape != (self.num_edges,):
            raise ValueError(f"connection mask has shape {kept.shape}: the block has {self.num_edges} connections")
        return kept.astype(bool, copy=False)


@lru_cache(maxsize=32)
def block_graph(levels: int, ops: tuple[str, ...]) -> BlockGraph:
    """The (shared, cached) graph of a block with ``levels`` levels of ``ops``."""
    return BlockGraph(levels, tuple(ops))
