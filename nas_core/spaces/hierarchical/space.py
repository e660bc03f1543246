"""The hierarchical search space (Liu et al., "Hierarchical representations
for efficient architecture search", ICLR 2018; nas-survey.md Fig. 4),
registered as ``hierarchical``.

Three levels: the paper's six level-1 primitives (and ``none``), ``num_motifs``
level-2 motifs, each a DAG of ``motif_nodes`` nodes over the primitives
(paper: M2 = 6 motifs of 4 nodes), and one level-3 motif, the cell, a DAG of
``cell_nodes`` nodes over the motifs (paper: 5 nodes). Op names, validity and
the genotype are in genotype.py, the network (the paper's small CIFAR model,
``init_channels`` C0 and ``cells_per_stage`` N) in network.py.

Sampling and mutation are the paper's:
- ``mutate``: a level (2 or 3) uniformly, a motif of that level uniformly
  (level 3 has one: the cell), a successor node j uniformly, a predecessor
  i < j uniformly, and the op on edge (i, j) replaced by a uniformly drawn
  *different* op of the level below, ``none`` included, except that ``none``
  is not drawn when the edge is j's only incoming edge (it would leave node j
  without an input; the paper does not say how it keeps a genotype valid).
  A mutation may change a motif the cell does not use, as in the paper.
- ``random``: the paper's initialisation, "a trivial genotype where each motif
  is a chain of identity mappings" (at every level) "diversified by a large
  number of random mutations": ``init_mutations`` mutations (paper: 1000).
  The paper's random search draws its genotypes the same way.

Encoding: one token per edge (its op's index), every motif's edges in
genotype.dag_edges order, then the cell's; ``encoding_bounds`` is 7 for a
motif edge, ``num_motifs`` + 2 for a cell edge. DC-NAS tables over these
tokens are in tables.py. FLOPs (multiply-adds) and parameters are counted on
the built network (nas_core.cost.module_cost); there is no latency table.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional

import numpy as np
import torch
from pydantic import Field

from nas_core.cost import module_cost
from nas_core.sections import Section
from nas_core.spaces.base import (
    SPACES,
    GenotypeError,
    Progress,
    SampleResult,
    SearchSpace,
    Tables,
    index_dtype,
    sample_in_chunks,
)
from nas_core.spaces.channel_ratio.network import init_weights
from nas_core.spaces.hierarchical import render
from nas_core.spaces.hierarchical import tables as token_tables
from nas_core.spaces.hierarchical.genotype import (
    IDENTITY,
    NONE,
    PRIMITIVES,
    SPACE_NAME,
    HierarchicalGenotype,
    cell_ops,
    dag_edges,
    dag_from_triples,
    motif_name,
)
from nas_core.spaces.hierarchical.network import HierarchicalNet
from nas_core.spaces.layer_tables import eq9_scores

KEYS = {"space", "motif_nodes", "cell_nodes", "motifs", "cell"}


class HierarchicalConfig(Section):
    """``spaces.hierarchical``. Defaults are the paper's: M2 = 6 motifs of 4
    nodes, a 5-node cell, the small CIFAR model used during search (C0 = 16,
    N = 1 cell per stage; its large evaluation model: C0 = 64, N = 2),
    1000 random mutations to initialise a genotype."""

    num_motifs: int = Field(6, ge=1, le=100)
    motif_nodes: int = Field(4, ge=2, le=12)
    cell_nodes: int = Field(5, ge=2, le=12)
    init_channels: int = Field(16, ge=1)
    cells_per_stage: int = Field(1, ge=1)
    init_mutations: int = Field(1000, ge=0)


@SPACES.register(SPACE_NAME)
@dataclass(frozen=True)
class HierarchicalSpace(SearchSpace):
    """The space for one config and data shape (C, H, W)."""

    family = "hierarchical"

    num_motifs: int
    motif_nodes: int
    cell_nodes: int
    init_channels: int
    cells_per_stage: int
    init_mutations: int
    input_shape: tuple[int, int, int]
    num_classes: int

    name: ClassVar[str] = SPACE_NAME
    Config: ClassVar[type[Section]] = HierarchicalConfig

    @classmethod
    def create(cls, config: HierarchicalConfig, input_shape: tuple[int, int, int],
               num_classes: int) -> "HierarchicalSpace":
        return cls(**config.model_dump(), input_shape=tuple(int(v) for v in input_shape),
                   num_classes=int(num_classes))

    # ------------------------------------------------------------ layout of the tokens
    @property
    def motif_edges(self) -> int:
        return len(dag_edges(self.motif_nodes))

    @property
    def cell_ops(self) -> tuple[str, ...]:
        return cell_ops(self.num_motifs)

    def _dags(self) -> list[tuple[str, int, slice, tuple[str, ...]]]:
        """(name, node count, token slice, op names) of every motif, then the cell."""
        e = self.motif_edges
        dags = [(motif_name(k), self.motif_nodes, slice(k * e, (k + 1) * e), PRIMITIVES)
                for k in range(self.num_motifs)]
        start = self.num_motifs * e
        return dags + [("cell", self.cell_nodes, slice(start, start + len(dag_edges(self.cell_nodes))),
                        self.cell_ops)]

    @cached_property
    def _incoming(self) -> list[tuple[int, list[list[int]]]]:
        """Per DAG (motifs, then the cell): its number of ops and, for nodes
        1..n-1, the tokens of the edges entering the node, ordered by source."""
        out = []
        for _, n, part, ops in self._dags():
            edges = dag_edges(n)
            out.append((len(ops), [[part.start + k for k, (_, j) in enumerate(edges) if j == node]
                                   for node in range(1, n)]))
        return out

    def _node_tokens(self) -> list[list[int]]:
        """Per (DAG, non-input node): the tokens of its incoming edges, in edge order."""
        return [tokens for _, nodes in self._incoming for tokens in nodes]

    # ------------------------------------------------------------ genotypes
    def genotype_from_dict(self, data: Any) -> HierarchicalGenotype:
        if not isinstance(data, Mapping):
            raise GenotypeError(f"a hierarchical genotype is a mapping, got {type(data).__name__}")
        if data.get("space") != self.name:
            raise GenotypeError(f"genotype of space {data.get('space')!r}: expected {self.name!r}")
        unknown, missing = sorted(set(data) - KEYS), sorted({"motifs", "cell"} - set(data))
        if unknown or missing:
            raise GenotypeError(f"hierarchical genotype: unknown keys {unknown}, missing keys {missing} "
                                f"(allowed: {', '.join(sorted(KEYS))})")
        for key in ("motif_nodes", "cell_nodes"):
            if key in data and data[key] != getattr(self, key):
                raise GenotypeError(f"hierarchical genotype: {key} = {data[key]!r}, this space has "
                                    f"{getattr(self, key)} (spaces.hierarchical.{key})")
        motifs = data["motifs"]
        if not isinstance(motifs, (list, tuple)) or len(motifs) != self.num_motifs:
            raise GenotypeError(f"hierarchical genotype: 'motifs' must list {self.num_motifs} motifs "
                                f"(spaces.hierarchical.num_motifs), got {motifs!r}")
        return HierarchicalGenotype(
            motifs=tuple(dag_from_triples(motif_name(k), m, self.motif_nodes) for k, m in enumerate(motifs)),
            cell=dag_from_triples("cell", data["cell"], self.cell_nodes))

    def trivial(self) -> HierarchicalGenotype:
        """The paper's starting point: every motif and the cell a chain of identities."""
        def chain(n: int) -> tuple[str, ...]:
            return tuple(IDENTITY if j == i + 1 else NONE for i, j in dag_edges(n))

        return HierarchicalGenotype(motifs=(chain(self.motif_nodes),) * self.num_motifs, cell=chain(self.cell_nodes))

    def random(self, rng: np.random.Generator) -> HierarchicalGenotype:
        """The trivial genotype after ``init_mutations`` mutations (the paper's initialisation)."""
        row = self.encode(self.trivial())
        for _ in range(self.init_mutations):
            self._mutate_row(row, rng)
        return self.decode(row)

    def mutate(self, genotype: HierarchicalGenotype, rng: np.random.Generator) -> HierarchicalGenotype:
        """The paper's mutation (module docstring): one edge of one motif or of the cell gets another op."""
        row = self.encode(genotype)
        self._mutate_row(row, rng)
        return self.decode(row)

    def _mutate_row(self, row: np.ndarray, rng: np.random.Generator) -> None:
        """In place: level, motif, successor j, predecessor i < j, a different op."""
        level = 2 + int(rng.integers(2))
        num_ops, nodes = self._incoming[int(rng.integers(self.num_motifs)) if level == 2 else self.num_motifs]
        j = 1 + int(rng.integers(len(nodes)))
        tokens = nodes[j - 1]
        token = tokens[int(rng.integers(j))]
        others_present = any(row[t] != 0 for t in tokens if t != token)
        choices = [o for o in range(num_ops) if o != row[token] and (o != 0 or others_present)]
        row[token] = choices[int(rng.integers(len(choices)))]

    @property
    def encoding_length(self) -> int:
        return self._dags()[-1][2].stop

    def encoding_bounds(self) -> np.ndarray:
        return np.concatenate([np.full(part.stop - part.start, len(ops), dtype=np.int64)
                               for _, _, part, ops in self._dags()])

    def encode(self, genotype: HierarchicalGenotype) -> np.ndarray:
        self.check(genotype)
        return np.array([PRIMITIVES.index(op) for motif in genotype.motifs for op in motif]
                        + [self.cell_ops.index(op) for op in genotype.cell], dtype=np.int64)

    def decode(self, row: np.ndarray) -> HierarchicalGenotype:
        row, bounds = np.asarray(row), self.encoding_bounds()
        if row.shape != bounds.shape or not np.issubdtype(row.dtype, np.integer) \
                or (row < 0).any() or (row >= bounds).any():
            raise GenotypeError(f"hierarchical encoding {row.tolist()}: expected {len(bounds)} integers, entry k in "
                                f"0..bounds[k]-1 (bounds {bounds.tolist()})")
        dags = [tuple(ops[int(v)] for v in row[part]) for _, _, part, ops in self._dags()]
        return HierarchicalGenotype(motifs=tuple(dags[:-1]), cell=dags[-1])

    def check(self, genotype: HierarchicalGenotype) -> None:
        """GenotypeError unless ``genotype`` has this space's motif count and node counts."""
        if not isinstance(genotype, HierarchicalGenotype):
            raise GenotypeError(f"expected a HierarchicalGenotype, got {type(genotype).__name__}")
        shape = (len(genotype.motifs), len(genotype.motifs[0]), len(genotype.cell))
        if shape != (self.num_motifs, self.motif_edges, len(dag_edges(self.cell_nodes))):
            raise GenotypeError(f"hierarchical genotype with {shape[0]} motifs of {shape[1]} edges and a cell of "
                                f"{shape[2]} edges does not fit this space ({self.num_motifs} motifs of "
                                f"{self.motif_nodes} nodes, a cell of {self.cell_nodes} nodes)")

    def label(self, genotype: HierarchicalGenotype) -> str:
        """Compact: per motif one character per edge (- none, i identity, c conv_1x1,
        d dw_conv_3x3, s sep_conv_3x3, M max pool, A avg pool), then the cell's
        edges (- none, i identity, motif number)."""
        letters = dict(zip(PRIMITIVES, "-icdsMA"))
        cell = [{NONE: "-", IDENTITY: "i"}.get(op, op.removeprefix("motif_")) for op in genotype.cell]
        return "/".join("".join(letters[op] for op in m) for m in genotype.motifs) + " | " + ".".join(cell)

    # ------------------------------------------------------------ networks
    def build_network(self, genotype: HierarchicalGenotype,
                      generator: Optional[torch.Generator] = None) -> HierarchicalNet:
        """The small-model network (network.py); with ``generator`` every weight
        is drawn from it (channel_ratio's ``init_weights``), else PyTorch's
        default init from the global RNG."""
        self.check(genotype)
        net = HierarchicalNet(genotype, self.input_shape[0], self.num_classes, self.init_channels,
                              self.cells_per_stage)
        if generator is not None:
            init_weights(net, generator)
        return net

    def training_recipe(self) -> dict[str, Any]:
        """None beyond plain SGD: the paper trains its models without drop path,
        auxiliary head or cutout."""
        return {}

    def cost(self, genotype: HierarchicalGenotype) -> dict[str, Optional[float]]:
        """Multiply-adds of one ``input_shape`` image and parameters, counted on the network."""
        with torch.random.fork_rng(devices=[]):  # weight values do not change the counts
            net = self.build_network(genotype)
        return {**module_cost(net, self.input_shape), "latency_ms": None}

    def render(self, genotype: HierarchicalGenotype, path: str | Path, title: str = "") -> Path:
        self.check(genotype)
        return render.render_genotype(genotype, path, title)

    def fingerprint(self) -> dict[str, Any]:
        return {"space": self.name, "num_motifs": self.num_motifs, "motif_nodes": self.motif_nodes,
                "cell_nodes": self.cell_nodes, "init_channels": self.init_channels,
                "cells_per_stage": self.cells_per_stage,
                "init_mutations": self.init_mutations, "input_shape": list(self.input_shape),
                "num_classes": self.num_classes}

    # ------------------------------------------------------------ probability tables
    def uniform_tables(self) -> dict[str, np.ndarray]:
        return token_tables.uniform_table(self.encoding_bounds())

    def sample(self, tables: Tables, num_samples: int, seed: int,
               progress: Optional[Progress] = None) -> SampleResult:
        """Tokens drawn from their rows, conditioned on validity (tables.py)."""
        bounds = self.encoding_bounds()
        probs = token_tables.token_table(tables, bounds)
        groups, dtype = self._node_tokens(), index_dtype(int(bounds.max()) - 1)
        return sample_in_chunks(lambda rng, n: token_tables.draw_valid(rng, probs, groups, n, dtype), num_samples, seed,
                                progress=progress)

    def score(self, rows: np.ndarray, tables: Tables, log: bool = False) -> np.ndarray:
        """Eq. 9: Σ over tokens of the chosen op's probability (``log``: Σ log)."""
        return eq9_scores(rows, token_tables.token_table(tables, self.encoding_bounds()), log)

    def plot_tables(self, tables: Tables, title: str = "") -> Any:
        probs = token_tables.token_table(tables, self.encoding_bounds())
        dags = self._dags()
        motif_rows = [r for _, _, part, _ in dags[:-1] for r in range(part.start, part.stop)]
        motif_labels = [f"{name} {i}>{j}" for name, n, _, _ in dags[:-1] for i, j in dag_edges(n)]
        cell_part = dags[-1][2]
        cell_labels = [f"cell {i}>{j}" for i, j in dag_edges(self.cell_nodes)]
        return token_tables.plot_token_tables(probs, [("motif edges", motif_rows, motif_labels, PRIMITIVES),
                                                ("cell edges", range(cell_part.start, cell_part.stop), cell_labels,
                                                 self.cell_ops)], title)
