"""P-DARTS (Chen et al., ICCV 2019): progressive DARTS.

The search runs in stages (``pdarts_cells``: 5, 11, 17 cells in the paper),
each for ``epochs`` epochs with its own cosine weight schedule; alpha is
updated only after the first ``warmup_epochs`` epochs of each stage (the
paper trains the weights alone for the first 10 of each stage's 25). Between
stages the supernet is deepened and, on every edge, only the
``pdarts_ops_kept[i]`` ops with the largest softmax(alpha) of the finished
stage are kept (8 -> 5 -> 3 in the paper); the next stage's network,
weights and alpha are built afresh over the kept ops, as in the P-DARTS
code. Zero ("none") competes like any op (our choice; an edge always keeps
at least one non-zero op since ``pdarts_ops_kept`` >= 2 and there is one
zero op).

Skip-connect dropout (search regularisation): stage i starts at
``skip_dropout[i]`` (CIFAR-10: 0.0, 0.4, 0.7) and decays within the stage
as p * exp(-0.2 * e), e the epoch inside the stage (P-DARTS code's factor).
After the search, the normal cell keeps at most ``skip_cap`` (M = 2)
skip-connects: the weakest kept skip-connect weight is zeroed and the cell
re-derived until it fits (:func:`nas_core.spaces.cell.cap_skips`).

Other defaults from the paper: batch 96, arch lr 6e-4; the rest as DARTS.
The tables are over the full op set (14, n_ops) with 0 for ops dropped on
an edge; ``supernet_key`` is the stage (each stage has its own network).
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Hashable, Mapping, Optional

import numpy as np
import torch
from pydantic import Field, model_validator

from nas_core.sections import CrossFieldError
from nas_core.spaces.cell import KINDS, NUM_EDGES, CellGenotype, derive_genotype
from nas_core.strategies.base import STRATEGIES, SearchData, SearchResult
from nas_core.strategies.darts import DartsFamilyConfig, DartsStrategy, SecondOrderKeys
from nas_core.supernet.cell import full_edge_ops

DROPOUT_DECAY = 0.2


class PDartsConfig(SecondOrderKeys, DartsFamilyConfig):
    """``strategies.p_darts``: ``epochs`` and ``warmup_epochs`` are per
    stage; ``pdarts_ops_kept[i]`` is the number of ops per edge kept after
    stage i (one per stage after the first); ``skip_dropout[i]`` the initial
    skip-connect dropout of stage i; ``skip_cap`` is the paper's M."""

    section: ClassVar[str] = "p_darts"
    epochs: int = Field(25, ge=1)
    batch_size: int = Field(96, ge=1)
    arch_lr: float = Field(6e-4, gt=0)
    warmup_epochs: int = Field(10, ge=0, description="epochs of each stage before alpha is first updated")
    pdarts_cells: list[int] = [5, 11, 17]
    pdarts_ops_kept: list[int] = [5, 3]
    skip_dropout: list[float] = [0.0, 0.4, 0.7]
    skip_cap: Optional[int] = Field(2, ge=0, le=8)

    @model_validator(mode="after")
    def _stages_fit(self) -> "PDartsConfig":
        key = "strategies.p_darts."
        if not self.pdarts_cells or any(c < 1 for c in self.pdarts_cells):
            raise CrossFieldError(key + "pdarts_cells", self.pdarts_cells, "a non-empty list of cell counts >= 1")
        stages = len(self.pdarts_cells)
        kept = self.pdarts_ops_kept
        if len(kept) != stages - 1 or any(k < 2 for k in kept) or any(a <= b for a, b in zip(kept, kept[1:])):
            raise CrossFieldError(key + "pdarts_ops_kept", kept,
                                  f"{stages - 1} strictly decreasing counts >= 2 (one per stage after the first)")
        if len(self.skip_dropout) != stages or any(not 0 <= p < 1 for p in self.skip_dropout):
            raise CrossFieldError(key + "skip_dropout", self.skip_dropout,
                                  f"{stages} rates in [0, 1) (one per {key}pdarts_cells stage)")
        return self


@STRATEGIES.register("p_darts")
class PDartsStrategy(DartsStrategy):
    name = "p_darts"
    Config = PDartsConfig

    def __init__(self, space, config, device, seed: int = 0) -> None:
        super().__init__(space, config, device, seed)
        too_many = [k for k in config.pdarts_ops_kept if k > len(self.op_names)]
        if too_many:
            raise CrossFieldError("strategies.p_darts.pdarts_ops_kept", config.pdarts_ops_kept,
                                  f"counts must be <= {len(self.op_names)}, the size of op set {space.op_set!r}")

    def num_epochs(self) -> int:
        return self.config.epochs * len(self.config.pdarts_cells)

    def stage_of(self, epoch: int) -> int:
        return epoch // self.config.epochs

    def updates_arch(self, epoch: int) -> bool:
        return epoch - self.stage_of(epoch) * self.config.epochs >= self.config.warmup_epochs

    def setup(self, data: Optional[SearchData]) -> None:
        torch.manual_seed(self.seed)
        self.stage = 0
        self.edge_ops = full_edge_ops(self.op_names)
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
        self.supernet.set_skip_dropout(p)
        return {"stage": float(stage), "cells": float(len(self.supernet.cells)), "skip_dropout": p,
                "ops_per_edge": float(len(self.edge_ops["normal"][0]))}

    def _stage_probabilities(self) -> dict[str, np.ndarray]:
        return super().probabilities()

    def probabilities(self) -> dict[str, np.ndarray]:
        """Scattered back onto the full op set (dropped ops: 0)."""
        out = {}
        for kind, table in self._stage_probabilities().items():
            full = np.zeros((NUM_EDGES, len(self.op_names)))
            for e, ops in enumerate(self.edge_ops[kind]):
                full[e, [self.op_names.index(o) for o in ops]] = table[e]
            out[kind] = full
        return out

    def genotype(self, skip_cap: int | None = None) -> CellGenotype:
        s = self._stage_probabilities()
        return derive_genotype(s["normal"], s["reduce"], self.edge_ops["normal"],
                               reduce_op_names=self.edge_ops["reduce"], skip_cap=skip_cap)

    def derive(self) -> SearchResult:
        result = super().derive()
        result.genotype = self.genotype(skip_cap=self.config.skip_cap)
        result.extras["uncapped_genotype"] = self.genotype().to_dict()
        result.extras["edge_ops"] = _plain(self.edge_ops)
        return result

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "stage": self.stage, "edge_ops": _plain(self.edge_ops)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._enter_stage(state)
        super().load_state_dict(state)

    def supernet_key(self, state: Mapping[str, Any]) -> Hashable:
        return int(state["stage"])

    def load_supernet(self, state: Mapping[str, Any]) -> torch.nn.Module:
        """The supernet of checkpoint ``state``'s stage with its weights (the
        stage's network and alpha are rebuilt when the stage differs; the
        global RNG is left as it was)."""
        if int(state["stage"]) != self.stage or _plain(self.edge_ops) != _plain(state["edge_ops"]):
            with torch.random.fork_rng(devices=[]):
                self._enter_stage(state)
            self.arch.load_state_dict(state["arch"])
        return super().load_supernet(state)

    def _enter_stage(self, state: Mapping[str, Any]) -> None:
        self.stage = int(state["stage"])
        self.edge_ops = {k: [tuple(ops) for ops in v] for k, v in state["edge_ops"].items()}
        self._build(self.config.pdarts_cells[self.stage], self.config.epochs)


def _plain(edge_ops: Mapping[str, Any]) -> dict[str, list[list[str]]]:
    return {k: [list(ops) for ops in v] for k, v in edge_ops.items()}


def _top_ops(ops: tuple[str, ...], row: np.ndarray, keep: int) -> tuple[str, ...]:
    """The ``keep`` strongest ops of an edge, in their original order
    (ties: the lower index wins)."""
    order = sorted(range(len(ops)), key=lambda j: (-row[j], j))[:keep]
    return tuple(ops[j] for j in sorted(order))
