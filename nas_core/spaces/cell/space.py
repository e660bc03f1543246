"""The DARTS cell space as a :class:`~nas_core.spaces.base.SearchSpace`,
registered as ``"cell"``.

A genotype is a :class:`CellGenotype` (two ``(op, input)`` pairs per node of
the normal and the reduction cell); its encoding the 32-entry row of
sampling.py; the architecture-probability tables ``normal`` / ``reduce``
(14, n_ops) (softmax alpha for DARTS) with optional per-edge weights
``edges_normal`` / ``edges_reduce`` (14,) (PC-DARTS's softmax beta); the
final network is DARTS's evaluation network of ``final_cells`` cells and
``final_channels`` initial channels (DARTS CIFAR-10: 20 cells, 36 channels;
reference-notes.md). The cell space has no measured latency table.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import nn

from nas_core.cost import module_cost
from nas_core.sections import Section
from nas_core.spaces.base import SPACES, GenotypeError, Progress, SampleResult, SearchSpace, Tables
from nas_core.spaces.cell import render, sampling
from nas_core.spaces.cell.genotype import (
    EDGES,
    KINDS,
    NODES,
    NUM_INPUTS,
    OP_SETS,
    SPACE_NAME,
    ZERO,
    CellGenotype,
    did_you_mean,
    op_set,
)
from nas_core.spaces.cell.network import CellNetwork
from nas_core.spaces.cell.ops import CELL_OPS


class CellConfig(Section):
    """``spaces.cell``: the candidate-op set (``darts`` = DARTS's 8 ops, or
    StacNAS's ``S1``-``S5``), the final network's depth and width and
    DARTS's evaluation recipe for training it (defaults: DARTS's CIFAR-10
    evaluation: 20 cells, 36 channels, auxiliary head weight 0.4, drop path
    0.2 ramped up linearly, cutout 16 px, gradient clip 5; 0 turns a part
    off)."""

    op_set: str = "darts"
    final_cells: int = Field(20, ge=1)
    final_channels: int = Field(36, ge=2)
    auxiliary_weight: float = Field(0.4, ge=0.0)
    drop_path_prob: float = Field(0.2, ge=0.0, lt=1.0)
    cutout_length: int = Field(16, ge=0)
    grad_clip: float = Field(5.0, gt=0.0)

    @field_validator("op_set")
    @classmethod
    def _known_op_set(cls, value: str) -> str:
        op_set(value)
        return value


@SPACES.register(SPACE_NAME)
@dataclass(frozen=True)
class CellSpace(SearchSpace):
    """The cell space for one op set and data shape; ``input_hw`` is the
    image size the cost is measured on."""

    family = "cell"

    name = SPACE_NAME
    Config = CellConfig

    @classmethod
    def registries(cls) -> dict:
        return {"op sets (spaces.cell.op_set)": OP_SETS, "ops": CELL_OPS}

    op_set: str
    input_channels: int
    num_classes: int
    final_cells: int = 20
    final_channels: int = 36
    input_hw: tuple[int, int] = (32, 32)
    auxiliary_weight: float = 0.0
    drop_path_prob: float = 0.0
    cutout_length: int = 0
    grad_clip: float = 5.0

    def __post_init__(self) -> None:
        op_set(self.op_set)

    @classmethod
    def create(cls, config: CellConfig, input_shape: tuple[int, int, int], num_classes: int) -> "CellSpace":
        c, h, w = (int(v) for v in input_shape)
        return cls(op_set=config.op_set, input_channels=c, num_classes=int(num_classes),
                   final_cells=config.final_cells, final_channels=config.final_channels, input_hw=(h, w),
                   auxiliary_weight=config.auxiliary_weight, drop_path_prob=config.drop_path_prob,
                   cutout_length=config.cutout_length, grad_clip=config.grad_clip)

    @property
    def op_names(self) -> tuple[str, ...]:
        return op_set(self.op_set)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.input_channels, *self.input_hw)

    @property
    def choice_ops(self) -> tuple[int, ...]:
        """Indices of the ops a genotype can use (all but ``none``)."""
        return tuple(j for j, name in enumerate(self.op_names) if name != ZERO)

    # ------------------------------------------------------------ genotypes
    def genotype_from_dict(self, data: Any) -> CellGenotype:
        genotype = CellGenotype.from_dict(data)
        self.check(genotype)
        return genotype

    def check(self, genotype: CellGenotype) -> None:
        """GenotypeError unless every op of ``genotype`` is in the op set and
        both cells concatenate all intermediate nodes."""
        allowed = [self.op_names[j] for j in self.choice_ops]
        for kind in KINDS:
            for i, (op, _) in enumerate(getattr(genotype, kind)):
                if op not in allowed:
                    raise GenotypeError(f"{kind} cell, node {NUM_INPUTS + i // 2}: op {op!r} is not in op set "
                                        f"{self.op_set!r}{did_you_mean(op, allowed)} (allowed: {', '.join(allowed)})")
            if tuple(getattr(genotype, f"{kind}_concat")) != NODES:
                raise GenotypeError(f"{kind}_concat = {getattr(genotype, f'{kind}_concat')}: the cell space "
                                    f"concatenates every intermediate node {NODES}")

    def random(self, rng: np.random.Generator) -> CellGenotype:
        """Per node two distinct inputs (uniform) and, on each, an op drawn
        uniformly from the non-zero ops."""
        ops = np.array(self.choice_ops)
        row = []
        for _ in KINDS:
            for node in NODES:
                inputs = np.sort(rng.choice(node, size=2, replace=False))
                for src in inputs:
                    row += [int(src), int(ops[rng.integers(len(ops))])]
        return self.decode(np.array(row, dtype=np.int64))

    def mutate(self, genotype: CellGenotype, rng: np.random.Generator) -> CellGenotype:
        """Regularised evolution's mutation: a cell kind, a node and one of
        its two inputs (each uniform), then half the time the op on it (a
        uniform other non-zero op), else the input itself (a uniform input
        the node does not use yet; node 2 has none, so its op changes)."""
        row = self.encode(genotype)
        base = 4 * int(rng.integers(len(row) // 4))  # one (cell kind, node) of the row
        node, pick = NODES[(base // 4) % len(NODES)], int(rng.integers(2))
        inputs, ops = [int(row[base]), int(row[base + 2])], [int(row[base + 1]), int(row[base + 3])]
        free = [s for s in range(node) if s not in inputs]
        if free and (rng.random() < 0.5 or len(self.choice_ops) == 1):
            inputs[pick] = free[int(rng.integers(len(free)))]
        else:
            others = [j for j in self.choice_ops if j != ops[pick]]
            ops[pick] = others[int(rng.integers(len(others)))]
        row[base:base + 4] = [v for pair in sorted(zip(inputs, ops)) for v in pair]
        return self.decode(row)

    @property
    def encoding_length(self) -> int:
        return sampling.ROW_WIDTH

    def encoding_bounds(self) -> np.ndarray:
        return sampling.row_bounds(len(self.op_names))

    def allowed_tokens(self, position: int, prefixes: np.ndarray) -> np.ndarray:
        bound = int(self.encoding_bounds()[position])
        return sampling.canonical_tokens(self.op_names, bound, position, prefixes)

    def encode(self, genotype: CellGenotype) -> np.ndarray:
        self.check(genotype)
        return sampling.genotype_to_row(genotype, self.op_names)

    def decode(self, row: np.ndarray) -> CellGenotype:
        try:
            return sampling.row_to_genotype(row, self.op_names)
        except GenotypeError:
            raise
        except ValueError as exc:
            raise GenotypeError(str(exc)) from None

    # ------------------------------------------------------------ networks
    def build_network(self, genotype: CellGenotype, auxiliary: Optional[bool] = None) -> nn.Module:
        """DARTS's evaluation network (``final_cells``, ``final_channels``),
        with the auxiliary head when ``auxiliary_weight`` > 0 (or
        ``auxiliary`` says so)."""
        self.check(genotype)
        auxiliary = self.auxiliary_weight > 0 if auxiliary is None else auxiliary
        return CellNetwork(genotype, self.input_channels, self.num_classes, self.final_channels, self.final_cells,
                           auxiliary)

    def training_recipe(self) -> dict[str, Any]:
        """DARTS's evaluation recipe (nas_core.train.fit)."""
        return {"aux_weight": self.auxiliary_weight, "drop_path": self.drop_path_prob,
                "cutout": self.cutout_length, "grad_clip": self.grad_clip}

    def cost(self, genotype: CellGenotype) -> dict[str, Optional[float]]:
        """Multiply-adds (FlopCounterMode / 2) of one ``input_shape`` image
        and parameters of the inference network (the auxiliary head only
        trains, so it is not counted, as DARTS reports); no latency table."""
        with torch.random.fork_rng(devices=[]):  # weight values do not change the counts
            net = self.build_network(genotype, auxiliary=False)
        return {**module_cost(net, self.input_shape), "latency_ms": None}

    def render(self, genotype: CellGenotype, path: str | Path, title: str = "") -> Path:
        """Both cells in one PNG."""
        self.check(genotype)
        return render.render_genotype(genotype, path, title)

    # ------------------------------------------------------------ probability tables
    def uniform_tables(self) -> dict[str, np.ndarray]:
        n = len(self.op_names)
        tables = {kind: np.full((len(EDGES), n), 1.0 / n) for kind in KINDS}
        return {**tables, **{f"edges_{kind}": np.ones(len(EDGES)) for kind in KINDS}}

    def sample(self, tables: Tables, num_samples: int, seed: int,
               progress: Optional[Progress] = None) -> SampleResult:
        """Per node two inputs, then an op on each (sampling.py)."""
        probs, edges = self._tables(tables)
        return sampling.sample_cell_archs(probs, self.op_names, num_samples, seed, edges, progress=progress)

    def score(self, rows: np.ndarray, tables: Tables, log: bool = False) -> np.ndarray:
        """Eq. 9: the sum over both cells' kept edges of edge weight x p(op)."""
        probs, edges = self._tables(tables)
        return sampling.cell_arch_scores(sampling.check_cell_rows(rows, self.op_names), probs, edges, log)

    def plot_tables(self, tables: Tables, title: str = "") -> Any:
        probs, _ = self._tables(tables)
        return render.plot_cell_probabilities(probs, self.op_names, title)

    def _tables(self, tables: Tables) -> tuple[dict[str, np.ndarray], Optional[dict[str, np.ndarray]]]:
        """(op tables, edge weights or None), shapes checked."""
        shapes = {kind: (len(EDGES), len(self.op_names)) for kind in KINDS}
        present = [f"edges_{kind}" in tables for kind in KINDS]
        if any(present) and not all(present):
            raise ValueError("cell tables: give both edges_normal and edges_reduce or neither")
        if all(present):
            shapes.update({f"edges_{kind}": (len(EDGES),) for kind in KINDS})
        for key, shape in shapes.items():
            if key not in tables:
                raise ValueError(f"cell tables: missing {key!r} (have {sorted(tables)})")
            if np.shape(tables[key]) != shape:
                raise ValueError(f"cell tables[{key!r}]: expected shape {shape}, got {np.shape(tables[key])}")
        probs = {kind: np.asarray(tables[kind], dtype=np.float64) for kind in KINDS}
        edges = ({kind: np.asarray(tables[f"edges_{kind}"], dtype=np.float64) for kind in KINDS}
                 if all(present) else None)
        return probs, edges
