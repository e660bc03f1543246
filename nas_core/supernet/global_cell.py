"""The supernet of the global cell space (DNAS-CAM, dnas-cam.md §3.3) and
its architecture parameters.

Network: DARTS's search network (nas_core.supernet.cell: stem, L search
cells of mixed ops with PC-DARTS's partial channels, reductions at L // 3
and 2L // 3, classifier) where cell k receives its own op weights
``psi[k]`` (14, n_ops) instead of one of two shared tables.

Architecture parameters (:class:`CamArchParams`), by ``parameterisation``:

- ``cam`` (Eq. 4): psi[k, i, j] = sigmoid(alpha[i, j])
  * softmax_i(beta[k, :])[i] * sigmoid(gamma[k, j]), with alpha (C, Op)
  shared by every cell, beta (L, C) per layer and connection, gamma
  (L, Op) per layer and op: L*C + L*Op + C*Op parameters. The softmax of
  beta runs over all C = 14 connections of cell k, as Eq. 4 writes it
  (i in [0, C)), not over the edges entering one node as PC-DARTS's edge
  normalisation does.
- ``iam``: psi[k] = sigmoid(alpha) for every k (one cell for the whole
  stack: C*Op parameters). This is CAM with beta and gamma frozen, up to
  the constant factor sigmoid(gamma) / C, so the ablation isolates what
  beta and gamma add; note DARTS proper has two tables (normal and
  reduction cells), this baseline one.
- ``full``: psi[k, i, j] = sigmoid(theta[k, i, j]), one free table per
  cell: L*C*Op parameters (the parameterisation CAM decouples, Fig. 2).

The mixed op on connection i of cell k is Eq. 5, sum_j psi[k, i, j] O^j(x)
(no normalisation over the ops: sigmoid weights as Fair-DARTS).
Initialisation: DARTS's 1e-3 * N(0, 1) for every tensor.

As a :class:`~nas_core.supernet.base.Supernet`, a sub-network is an encoded
global genotype (L x 16 entries): one "layer" per cell; cell k evaluates the
row's op on its 8 kept edges (nas_core.supernet.cell.path_mix) and depends
on the first 16 (k + 1) entries.
"""
from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from nas_core.spaces.cell import EDGES, HALF_WIDTH, NUM_INPUTS, NUM_NODES, PICKS, cell_plan, edge_index, stem
from nas_core.spaces.cell.network import STEM_MULTIPLIER
from nas_core.spaces.global_cell import check_global_rows
from nas_core.supernet.cell import MIX_CACHE_SIZE, MixedOp, MixWeights, SearchCell, path_mix

Parameterisation = Literal["cam", "iam", "full"]
PARAMETERISATIONS: tuple[str, ...] = ("cam", "iam", "full")


class CamArchParams(nn.Module):
    """The architecture parameters of one parameterisation (module
    docstring); :meth:`psi` is the (L, C, Op) weight tensor."""

    def __init__(self, num_cells: int, n_ops: int, parameterisation: Parameterisation = "cam",
                 n_edges: int = len(EDGES)) -> None:
        super().__init__()
        if parameterisation not in PARAMETERISATIONS:
            raise ValueError(f"parameterisation = {parameterisation!r}: allowed {', '.join(PARAMETERISATIONS)}")
        self.parameterisation, self.num_cells = parameterisation, num_cells
        if parameterisation == "full":
            self.theta = nn.Parameter(1e-3 * torch.randn(num_cells, n_edges, n_ops))
            return
        self.alpha = nn.Parameter(1e-3 * torch.randn(n_edges, n_ops))
        if parameterisation == "cam":
            self.beta = nn.Parameter(1e-3 * torch.randn(num_cells, n_edges))
            self.gamma = nn.Parameter(1e-3 * torch.randn(num_cells, n_ops))

    def psi(self) -> torch.Tensor:
        """(L, C, Op) op weights of every cell (Eq. 4)."""
        if self.parameterisation == "full":
            return torch.sigmoid(self.theta)
        alpha = torch.sigmoid(self.alpha)
        if self.parameterisation == "iam":
            return alpha.expand(self.num_cells, *alpha.shape)
        beta = F.softmax(self.beta, dim=1)
        return alpha[None, :, :] * beta[:, :, None] * torch.sigmoid(self.gamma)[:, None, :]

    def sigmoids(self) -> list[torch.Tensor]:
        """The sigmoid outputs of this parameterisation (what Fair-DARTS's
        zero-one loss pushes towards 0 or 1): sigmoid(alpha) and, for CAM,
        sigmoid(gamma); sigmoid(theta) for ``full``."""
        if self.parameterisation == "full":
            return [torch.sigmoid(self.theta)]
        out = [torch.sigmoid(self.alpha)]
        if self.parameterisation == "cam":
            out.append(torch.sigmoid(self.gamma))
        return out


def zero_one_loss(sigmoids: Sequence[torch.Tensor]) -> torch.Tensor:
    """Fair-DARTS's zero-one loss: -mean((s - 0.5)^2) over every sigmoid
    output (smallest when each is 0 or 1)."""
    flat = torch.cat([s.flatten() for s in sigmoids])
    return -((flat - 0.5) ** 2).mean()


class GlobalSearchNetwork(nn.Module):
    """The proxy network of L search cells (module docstring) over the
    space's op set ``op_names``; ``k``: PC-DARTS's partial channels."""

    def __init__(self, op_names: Sequence[str], input_channels: int, num_classes: int, channels: int,
                 cells: int, k: int = 1) -> None:
        super().__init__()
        self.op_names = tuple(op_names)
        edge_ops = [self.op_names] * len(EDGES)
        self.stem = stem(input_channels, STEM_MULTIPLIER * channels)
        plans = cell_plan(channels, cells, lambda reduction: NUM_NODES)
        self.cells = nn.ModuleList(SearchCell(*plan, edge_ops, k) for plan in plans)
        self.classifier = nn.Linear(NUM_NODES * plans[-1].c, num_classes)
        self._mixes: dict[tuple, MixWeights] = {}

    def forward(self, x: torch.Tensor, mixes: Sequence[MixWeights]) -> torch.Tensor:
        """Logits with ``mixes[k]`` the op weights of cell k."""
        if len(mixes) != len(self.cells):
            raise ValueError(f"global supernet: {len(mixes)} op-weight tables for {len(self.cells)} cells")
        s0 = s1 = self.stem(x)
        for cell, mix in zip(self.cells, mixes):
            s0, s1 = s1, cell(s0, s1, mix)
        return self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))

    def set_skip_dropout(self, p: float) -> None:
        for module in self.modules():
            if isinstance(module, MixedOp):
                module.skip_dropout = p

    # ------------------------------------------------------------ Supernet protocol
    def path_depth(self) -> int:
        return len(self.cells)

    def path_prefix(self, depth: int) -> int:
        """Cell ``depth`` depends on the rows of cells 0..depth."""
        return HALF_WIDTH * (depth + 1)

    def check_rows(self, rows: np.ndarray) -> np.ndarray:
        return check_global_rows(rows, self.op_names, len(self.cells))

    def path_begin(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.stem(x)
        return s, s

    def path_step(self, depth: int, state: tuple[torch.Tensor, torch.Tensor],
                  row: np.ndarray) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        s0, s1 = state
        out = self.cells[depth](s0, s1, self.path_mix(row, depth, s1.device))
        return (s1, out), out

    def path_step_key(self, depth: int, row: np.ndarray) -> bytes:
        """Rows with the same genotype for cell ``depth`` run the same cell
        there (the batched walk of nas_core.dcnas.features)."""
        return self._half(row, depth).tobytes()

    def path_logits(self, state: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return self.classifier(F.adaptive_avg_pool2d(state[1], 1).flatten(1))

    def path_mix(self, row: np.ndarray, depth: int, device: torch.device) -> MixWeights:
        """One-path weights of cell ``depth`` of ``row`` (cached per cell row)."""
        half = self._half(row, depth)
        key = (half.tobytes(), str(device))
        if key not in self._mixes:
            if len(self._mixes) >= MIX_CACHE_SIZE:
                self._mixes.clear()
            self._mixes[key] = path_mix(half, self.op_names, device)
        return self._mixes[key]

    def path_parameter_names(self, depth: int, row: np.ndarray) -> tuple[str, ...]:
        """Cell ``depth``'s two preprocessing layers and the row's op on each
        of its 8 kept edges."""
        cell, half, prefix = self.cells[depth], self._half(row, depth), f"cells.{depth}."
        names = [prefix + n for n, _ in cell.preprocess0.named_parameters(prefix="preprocess0")]
        names += [prefix + n for n, _ in cell.preprocess1.named_parameters(prefix="preprocess1")]
        for n in range(NUM_NODES):
            for pick in range(PICKS):
                e = edge_index(NUM_INPUTS + n, int(half[4 * n + 2 * pick]))
                i = int(half[4 * n + 2 * pick + 1])
                names += [prefix + p for p, _ in cell.edges[e].ops[i].named_parameters(prefix=f"edges.{e}.ops.{i}")]
        return tuple(names)

    @staticmethod
    def _half(row: np.ndarray, depth: int) -> np.ndarray:
        return np.asarray(row, dtype=np.int64)[HALF_WIDTH * depth:HALF_WIDTH * (depth + 1)]
