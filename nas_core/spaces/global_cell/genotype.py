"""Genotypes of the global cell space (DNAS-CAM, dnas-cam.md §3.1): a stack
of L cells in which every cell may differ.

Each position k in 0..L-1 holds one cell of the DARTS cell space (the same
DAG, two ``(op, input)`` pairs per intermediate node, every intermediate
node concatenated); position k is a reduction cell when k is one of
``reduction_layers(L)`` (DARTS's stacking: L // 3 and 2L // 3), a normal
cell otherwise. The kind follows from the position, so a genotype stores
only its cells.

Encoding: the 16-entry half row of nas_core.spaces.cell.sampling per cell
(``(input_a, op_a, input_b, op_b)`` for nodes 2..5), L of them back to back.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from nas_core.spaces.base import GenotypeError
from nas_core.spaces.cell import HALF_WIDTH, KINDS, NUM_INPUTS, CellGenotype, reduction_layers
from nas_core.spaces.cell.genotype import Cell, derive_cell
from nas_core.spaces.cell.sampling import genotype_to_row, row_to_genotype

SPACE_NAME = "global_cell"


def kind_at(position: int, num_cells: int) -> str:
    """``"reduce"`` at DARTS's reduction positions of an L-cell stack, else ``"normal"``."""
    return KINDS[1] if position in reduction_layers(num_cells) else KINDS[0]


def _as_cell(position: int, cell: Any) -> Cell:
    """One position's cell, checked by the cell space's genotype (op names,
    inputs, 8 pairs), its error prefixed by the position."""
    try:
        pairs = tuple((str(op), int(src)) for op, src in cell)
        return CellGenotype(normal=pairs, reduce=pairs).normal
    except GenotypeError as exc:
        detail = str(exc).removeprefix("normal cell")  # ": ..." or ", node n: ..."
        raise GenotypeError(f"global cell genotype, cell {position}{detail}") from None
    except (TypeError, ValueError):
        raise GenotypeError(f"global cell genotype, cell {position}: expected (op, input) pairs, "
                            f"got {cell!r}") from None


@dataclass(frozen=True)
class GlobalCellGenotype:
    """L cells, position 0 nearest the stem (module docstring); each cell's
    node pairs are stored ordered by input, so equal architectures are
    equal values."""

    cells: tuple[Cell, ...]

    def __post_init__(self) -> None:
        if isinstance(self.cells, (str, bytes)) or not isinstance(self.cells, Sequence) or not self.cells:
            raise GenotypeError(f"global cell genotype: 'cells' must be a non-empty list of cells, "
                                f"got {self.cells!r}")
        object.__setattr__(self, "cells", tuple(_as_cell(k, c) for k, c in enumerate(self.cells)))

    @property
    def num_cells(self) -> int:
        return len(self.cells)

    def kind(self, position: int) -> str:
        return kind_at(position, self.num_cells)

    def count(self, op: str, kind: str | None = None) -> int:
        """How often ``op`` is kept, over the cells of ``kind`` (None: all)."""
        return sum(1 for k, cell in enumerate(self.cells) if kind in (None, self.kind(k))
                   for name, _ in cell if name == op)

    def ops(self) -> set[str]:
        return {op for cell in self.cells for op, _ in cell}

    def __str__(self) -> str:
        parts = []
        for k, cell in enumerate(self.cells):
            nodes = [" + ".join(f"{op}({src})" for op, src in cell[i:i + NUM_INPUTS])
                     for i in range(0, len(cell), NUM_INPUTS)]
            parts.append(f"{k} {self.kind(k)}: " + " | ".join(nodes))
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"space": SPACE_NAME, "cells": [[list(p) for p in cell] for cell in self.cells]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Any) -> "GlobalCellGenotype":
        """The genotype of ``to_dict()`` output (other keys are ignored)."""
        if not isinstance(data, dict):
            raise GenotypeError(f"global cell genotype: expected a mapping, got {type(data).__name__}")
        if data.get("space") != SPACE_NAME:
            raise GenotypeError(f"global cell genotype: 'space' = {data.get('space')!r}, expected {SPACE_NAME!r}")
        if "cells" not in data:
            raise GenotypeError(f"global cell genotype: missing key 'cells' (have {sorted(data)})")
        cells = data["cells"]
        if not isinstance(cells, (list, tuple)):
            raise GenotypeError(f"global cell genotype: 'cells' must be a list of cells, got {cells!r}")
        return cls(cells=tuple(tuple(tuple(p) for p in cell) for cell in cells))

    @classmethod
    def from_json(cls, text: str) -> "GlobalCellGenotype":
        return cls.from_dict(json.loads(text))


def cell_to_row(cell: Cell, op_names: Sequence[str]) -> np.ndarray:
    """The 16-entry half row of one cell (the cell space's encoding)."""
    return genotype_to_row(CellGenotype(normal=cell, reduce=cell), op_names)[:HALF_WIDTH]


def row_to_cell(half: np.ndarray, op_names: Sequence[str]) -> Cell:
    """One cell from its 16-entry half row (ValueError naming a bad entry)."""
    half = np.asarray(half)
    return row_to_genotype(np.concatenate([half, half]), op_names).normal


def derive_global(weights: np.ndarray, op_names: Sequence[str]) -> GlobalCellGenotype:
    """DARTS's rule (nas_core.spaces.cell.derive_cell) on each layer's
    (14, n_ops) slice of ``weights`` (L, 14, n_ops)."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 3:
        raise ValueError(f"global cell weights: expected shape (L, 14, n_ops), got {weights.shape}")
    return GlobalCellGenotype(cells=tuple(derive_cell(w, op_names) for w in weights))
