"""The global cell space (DNAS-CAM) as a
:class:`~nas_core.spaces.base.SearchSpace`, registered as ``"global_cell"``.

A genotype is a :class:`GlobalCellGenotype` (L cells of the DARTS cell
space, each its own); its encoding L x the 16-entry cell row; the
architecture-probability tables ``cell_<k>`` (14, n_ops) and
``edges_<k>`` (14,) per position k (tables.py); the final network DARTS's evaluation network with
cell k = the genotype's k-th cell (network.py). The space has no measured
latency table.

Choice: the number of cells L is a key of the space (``cells``), not of a
strategy: a global architecture is searched at the depth it is used at
(dnas-cam.md §1: the proxy-to-final depth gap is what it removes), so the
search supernet and the final network both have L cells; only their widths
differ (the strategy's ``init_channels`` against ``final_channels``).
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
from nas_core.spaces.cell import (
    CELL_OPS,
    EDGES,
    HALF_WIDTH,
    NODES,
    NUM_INPUTS,
    OP_SETS,
    ZERO,
    CellGenotype,
    CellSpace,
    op_set,
)
from nas_core.spaces.cell.genotype import did_you_mean
from nas_core.spaces.cell.sampling import canonical_tokens
from nas_core.spaces.global_cell import tables as T
from nas_core.spaces.global_cell.genotype import SPACE_NAME, GlobalCellGenotype, cell_to_row, row_to_cell
from nas_core.spaces.global_cell.network import GlobalCellNetwork
from nas_core.spaces.global_cell.render import render_global


class GlobalCellConfig(Section):
    """``spaces.global_cell``: the candidate-op set (as ``spaces.cell``),
    the number of cells L of the searched and the final network, the final
    width and DARTS's evaluation recipe (defaults: DNAS's CIFAR-10 network,
    L = 20 cells of 36 channels, as DARTS's evaluation network whose size
    its 3.35 M parameters match; auxiliary head 0.4, drop path 0.2,
    cutout 16 px, gradient clip 5; 0 turns a part off)."""

    op_set: str = "darts"
    cells: int = Field(20, ge=3, description="L: cells of the searched and the final network")
    final_channels: int = Field(36, ge=2)
    auxiliary_weight: float = Field(0.4, ge=0.0)
    drop_path_prob: float = Field(0.2, ge=0.0, lt=1.0)
    cutout_length: int = Field(16, ge=0)
    grad_clip: float = Field(5.0, gt=0.0)

    @field_validator("op_set")
    @classmethod
    def _known_op_set(cls, value: str) -> str:
        try:
            op_set(value)
        except ValueError as exc:
            raise ValueError(str(exc).replace("spaces.cell.", "spaces.global_cell.")) from None
        return value


@SPACES.register(SPACE_NAME)
@dataclass(frozen=True)
class GlobalCellSpace(SearchSpace):
    """The global cell space for one op set, depth and data shape;
    ``input_hw`` is the image size the cost is measured on."""

    family = "global_cell"

    name = SPACE_NAME
    Config = GlobalCellConfig

    @classmethod
    def registries(cls) -> dict:
        return {"op sets (spaces.global_cell.op_set)": OP_SETS, "ops": CELL_OPS}

    op_set: str
    input_channels: int
    num_classes: int
    cells: int = 20
    final_channels: int = 36
    input_hw: tuple[int, int] = (32, 32)
    auxiliary_weight: float = 0.0
    drop_path_prob: float = 0.0
    cutout_length: int = 0
    grad_clip: float = 5.0

    def __post_init__(self) -> None:
        op_set(self.op_set)
        if self.cells < 3:
            raise ValueError(f"spaces.global_cell.cells = {self.cells}: need >= 3 (two reduction cells)")

    @classmethod
    def create(cls, config: GlobalCellConfig, input_shape: tuple[int, int, int],
               num_classes: int) -> "GlobalCellSpace":
        c, h, w = (int(v) for v in input_shape)
        return cls(op_set=config.op_set, input_channels=c, num_classes=int(num_classes), cells=config.cells,
                   final_channels=config.final_channels, input_hw=(h, w),
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

    def _cell_space(self) -> CellSpace:
        """The cell space over the same op set: one position's cell is drawn
        and mutated as it draws and mutates one cell."""
        return CellSpace(op_set=self.op_set, input_channels=self.input_channels, num_classes=self.num_classes)

    # ------------------------------------------------------------ genotypes
    def genotype_from_dict(self, data: Any) -> GlobalCellGenotype:
        genotype = GlobalCellGenotype.from_dict(data)
        self.check(genotype)
        return genotype

    def check(self, genotype: GlobalCellGenotype) -> None:
        """GenotypeError unless ``genotype`` has this space's L cells and
        every op is in the op set."""
        if not isinstance(genotype, GlobalCellGenotype):
            raise GenotypeError(f"global cell space: expected a GlobalCellGenotype, got {type(genotype).__name__}")
        if genotype.num_cells != self.cells:
            raise GenotypeError(f"global cell genotype: {genotype.num_cells} cells, but spaces.global_cell.cells "
                                f"= {self.cells}")
        allowed = [self.op_names[j] for j in self.choice_ops]
        for k, cell in enumerate(genotype.cells):
            for i, (op, _) in enumerate(cell):
                if op not in allowed:
                    raise GenotypeError(f"global cell genotype, cell {k}, node {NUM_INPUTS + i // 2}: op {op!r} "
                                        f"is not in op set {self.op_set!r}{did_you_mean(op, allowed)} "
                                        f"(allowed: {', '.join(allowed)})")

    def random(self, rng: np.random.Generator) -> GlobalCellGenotype:
        """Each cell as the cell space draws one: per node two distinct
        uniform inputs and a uniform non-zero op on each."""
        ops = np.array(self.choice_ops)
        cells = []
        for _ in range(self.cells):
            pairs = []
            for node in NODES:
                for src in np.sort(rng.choice(node, size=2, replace=False)):
                    pairs.append((self.op_names[int(ops[rng.integers(len(ops))])], int(src)))
            cells.append(tuple(pairs))
        return GlobalCellGenotype(cells=tuple(cells))

    def mutate(self, genotype: GlobalCellGenotype, rng: np.random.Generator) -> GlobalCellGenotype:
        """A uniform cell position, then the cell space's mutation of that
        one cell (one op, or one input of one node)."""
        self.check(genotype)
        k = int(rng.integers(self.cells))
        cell = genotype.cells[k]
        child = self._cell_space().mutate(CellGenotype(normal=cell, reduce=cell), rng)
        new = child.normal if child.normal != cell else child.reduce  # exactly one half changed
        return GlobalCellGenotype(cells=genotype.cells[:k] + (new,) + genotype.cells[k + 1:])

    @property
    def encoding_length(self) -> int:
        return self.cells * HALF_WIDTH

    def encoding_bounds(self) -> np.ndarray:
        return T.global_bounds(len(self.op_names), self.cells)

    def allowed_tokens(self, position: int, prefixes: np.ndarray) -> np.ndarray:
        bound = int(self.encoding_bounds()[position])
        return canonical_tokens(self.op_names, bound, position, prefixes)

    def encode(self, genotype: GlobalCellGenotype) -> np.ndarray:
        self.check(genotype)
        return np.concatenate([cell_to_row(cell, self.op_names) for cell in genotype.cells])

    def decode(self, row: np.ndarray) -> GlobalCellGenotype:
        row = np.asarray(row)
        if row.ndim != 1:
            raise GenotypeError(f"global cell architecture row: expected one row of {self.encoding_length} "
                                f"entries, got shape {row.shape}")
        try:
            row = T.check_global_rows(row[None, :], self.op_names, self.cells)[0]
        except ValueError as exc:
            raise GenotypeError(str(exc)) from None
        halves = row.reshape(self.cells, HALF_WIDTH)
        return GlobalCellGenotype(cells=tuple(row_to_cell(h, self.op_names) for h in halves))

    def label(self, genotype: GlobalCellGenotype) -> str:
        return str(genotype)

    # ------------------------------------------------------------ networks
    def build_network(self, genotype: GlobalCellGenotype, auxiliary: Optional[bool] = None) -> nn.Module:
        """DARTS's evaluation network of the genotype's L cells
        (``final_channels`` wide), the auxiliary head when
        ``auxiliary_weight`` > 0 (or ``auxiliary`` says so)."""
        self.check(genotype)
        auxiliary = self.auxiliary_weight > 0 if auxiliary is None else auxiliary
        return GlobalCellNetwork(genotype, self.input_channels, self.num_classes, self.final_channels, auxiliary)

    def training_recipe(self) -> dict[str, Any]:
        """DARTS's evaluation recipe (nas_core.train.fit)."""
        return {"aux_weight": self.auxiliary_weight, "drop_path": self.drop_path_prob,
                "cutout": self.cutout_length, "grad_clip": self.grad_clip}

    def cost(self, genotype: GlobalCellGenotype) -> dict[str, Optional[float]]:
        """Multiply-adds and parameters of the inference network (without
        the auxiliary head); no latency table."""
        with torch.random.fork_rng(devices=[]):
            net = self.build_network(genotype, auxiliary=False)
        return {**module_cost(net, self.input_shape), "latency_ms": None}

    def render(self, genotype: GlobalCellGenotype, path: str | Path, title: str = "") -> Path:
        """The whole stack: every cell's kept edges and its op counts by depth."""
        self.check(genotype)
        return render_global(genotype, self.op_names, path, title)

    # ------------------------------------------------------------ probability tables
    def uniform_tables(self) -> dict[str, np.ndarray]:
        n = len(self.op_names)
        return T.make_tables(np.full((self.cells, len(EDGES), n), 1.0 / n), np.ones((self.cells, len(EDGES))))

    def sample(self, tables: Tables, num_samples: int, seed: int,
               progress: Optional[Progress] = None) -> SampleResult:
        ops, edges = T.check_tables(tables, len(self.op_names), self.cells)
        return T.sample_global_archs(ops, edges, self.op_names, num_samples, seed, progress)

    def score(self, rows: np.ndarray, tables: Tables, log: bool = False) -> np.ndarray:
        ops, edges = T.check_tables(tables, len(self.op_names), self.cells)
        return T.global_arch_scores(T.check_global_rows(rows, self.op_names, self.cells), ops, edges, log)

    def plot_tables(self, tables: Tables, title: str = "") -> Any:
        ops, edges = T.check_tables(tables, len(self.op_names), self.cells)
        return T.plot_global_tables(ops, edges, self.op_names, title)
