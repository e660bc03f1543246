"""P-DARTS (Chen et al., ICCV 2019): progressive DARTS.

The search runs in stages (``pdarts_cells``, e.g. 5, 11, 17 cells in the
paper; shrunk here), each for ``epochs`` epochs with its own cosine weight
schedule. Between stages the supernet is deepened and, on every edge, only
the ``pdarts_ops_kept[i]`` ops with the largest softmax(alpha) of the
finished stage are kept (8 -> 5 -> 3 in the paper); the next stage's
network, weights and alpha are built afresh over the kept ops, as in the
P-DARTS code. Zero ("none") competes like any op (our choice; an edge
always keeps at least one non-zero op since ``pdarts_ops_kept`` >= 2 and
there is one zero op).

Skip-connect dropout (search regularisation): stage i starts at
``skip_dropout[i]`` and decays within the stage as p * exp(-0.2 * e), e the
epoch inside the stage (P-DARTS code's factor). After the search, the
normal cell keeps at most ``skip_cap`` (M = 2) skip-connects: the weakest
kept skip-connect weight is zeroed and the cell re-derived until it fits
(:func:`nas_core.spaces.cell.cap_skips`).

``probabilities`` are reported over the full op set (14, n_ops) with 0 for
ops dropped on an edge.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from nas_core.spaces.cell import CellGenotype, derive_genotype
from nas_core.strategies.base import STRATEGIES, SearchData, SearchResult
from nas_core.strategies.darts import KINDS, DartsStrategy

DROPOUT_DECAY = 0.2


@STRATEGIES.register("p_darts")
class PDartsStrategy(DartsStrategy):
    name = "p_darts"

    def __init__(self, space, config, device, seed: int = 0) -> None:
        super().__init__(space, config, device, seed)
        too_many = [k for k in config.pdarts_ops_kept if k > len(self.op_names)]
        if too_many:
            raise ValueError(f"search.cell.pdarts_ops_kept = {config.pdarts_ops_kept}: counts must be <= "
                             f"{len(self.op_names)}, the size of op set {space.op_set!r}")

    def num_epochs(self) -> int:
        return self.config.epochs * len(self.config.pdarts_cells)

    def stage_of(self, epoch: int) -> int:
        return epoch // self.config.epochs

    def setup(self, data: SearchData) -> None:
        torch.manual_seed(self.seed)
        self.stage = 0
        full = [self.op_names] * 14
        self.edge_ops = {"normal": full, "reduce": full}
        self._build(self.config.pdarts_cells[0], self.config.epochs)

    def _advance(self, stage: int) -> None:
        """Prune every edge to the strongest ops and build the next stage."""
        keep = self.config.pdarts_ops_kept[stage - 1]
        probs = self._stage_probabilities()
        self.edge_ops = {kind: [_top_ops(ops, row, keep) for ops, row in zip(self.edge_ops[kind], probs[kind])]
                         for kind in KINDS}
        self.stage = stage
        self._build(self.config.pdarts_cells[stage], self.config.epochs)

    def before_epoch(self, epoch: int) -> dict[str, float]:
        stage = self.stage_of(epoch)
        if stage != self.stage:
            self._advance(stage)
        in_stage = epoch - stage * self.config.epochs
        p = self.config.skip_dropout[stage] * math.exp(-DROPOUT_DECAY * in_stage)
        self.net.set_skip_dropout(p)
        return {"stage": float(stage), "cells": float(len(self.net.cells)), "skip_dropout": p,
                "ops_per_edge": float(len(self.edge_ops["normal"][0]))}

    def _stage_probabilities(self) -> dict[str, np.ndarray]:
        return super().probabilities()

    def probabilities(self) -> dict[str, np.ndarray]:
        """Scattered back onto the full op set (dropped ops: 0)."""
        out = {}
        for kind, table in self._stage_probabilities().items():
            full = np.zeros((14, len(self.op_names)))
            for e, ops in enumerate(self.edge_ops[kind]):
                full[e, [self.op_names.index(o) for o in ops]] = table[e]
            out[kind] = full
        return out

    def genotype(self, skip_cap: int | None = None) -> CellGenotype:
        s = {kind: self._stage_probabilities()[kind] for kind in KINDS}
        return derive_genotype(s["normal"], s["reduce"], self.edge_ops["normal"],
                               reduce_op_names=self.edge_ops["reduce"], skip_cap=skip_cap)

    def derive(self) -> SearchResult:
        result = super().derive()
        result.genotype = self.genotype(skip_cap=self.config.skip_cap)
        result.extras["uncapped_genotype"] = self.genotype().to_dict()
        result.extras["edge_ops"] = {k: [list(ops) for ops in v] for k, v in self.edge_ops.items()}
        return result

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "stage": self.stage,
                "edge_ops": {k: [list(ops) for ops in v] for k, v in self.edge_ops.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stage = int(state["stage"])
        self.edge_ops = {k: [tuple(ops) for ops in v] for k, v in state["edge_ops"].items()}
        self._build(self.config.pdarts_cells[self.stage], self.config.epochs)
        super().load_state_dict(state)


def _top_ops(ops: tuple[str, ...], row: np.ndarray, keep: int) -> tuple[str, ...]:
    """The ``keep`` strongest ops of an edge, in their original order
    (ties: the lower index wins)."""
    order = sorted(range(len(ops)), key=lambda j: (-row[j], j))[:keep]
    return tuple(ops[j] for j in sorted(order))
