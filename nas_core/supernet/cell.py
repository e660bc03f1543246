"""The cell supernet shared by the differentiable strategies (DARTS family);
the final network of a genotype is nas_core.spaces.cell.network.

The mixed op on an edge computes (DARTS Eq. 1)
``o(x) = sum_i w_i * op_i(x)``; how ``w`` is made from the architecture
parameters is the strategy's business (softmax for DARTS, relaxed Gumbel for
SNAS, a straight-through hard one-hot for GDAS), so the supernet receives
ready weights in a :class:`MixWeights`:

- ``ops`` (14, n_ops): per-edge op weights;
- ``edges`` (14,) or None: per-edge multipliers (PC-DARTS edge
  normalisation, softmax of beta over the edges entering a node);
- ``index`` (14,) or None: when given, each edge evaluates ONLY the op
  ``index[e]`` and returns ``ops[e, index[e]] * op(x)`` (GDAS one-path; the
  straight-through gradient reaches alpha through that one weight).

Partial channels (PC-DARTS): with ``k > 1`` only the first C/k channels go
through the ops, the rest bypass (max-pooled when the edge reduces), the
two parts are concatenated and channel-shuffled with k groups. ``k = 1``
is DARTS exactly.

Network layout: DARTS ``model_search.py`` (nas_core.spaces.cell.network).

As a :class:`~nas_core.supernet.base.Supernet`, a sub-network is an encoded
cell genotype (a 32-entry row of nas_core.spaces.cell.sampling, op indices
into the space's op set): one "layer" per cell; each cell evaluates one op
per edge, the row's op with weight 1 on its 8 kept edges and ``none`` (or
the edge's first op where P-DARTS pruned ``none``) with weight 0 on the
other 6 (:func:`path_mix`); PC-DARTS's edge weights are not applied (the
sub-network is the genotype itself). A normal cell depends on the normal
half of the row only, so cells up to the first reduction share the prefix
of 16 entries; every later cell depends on the whole row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from nas_core.spaces.cell.genotype import EDGES, KINDS, NODES, NUM_INPUTS, NUM_NODES, SKIP, ZERO, edge_index, node_edges
from nas_core.spaces.cell.network import STEM_MULTIPLIER, cell_plan, channel_shuffle, preprocess, stem
from nas_core.spaces.cell.ops import is_pool, make_op
from nas_core.spaces.cell.sampling import HALF_WIDTH, PICKS, ROW_WIDTH, check_cell_rows

EdgeOps = Sequence[Sequence[str]]
MIX_CACHE_SIZE = 4096


@dataclass
class MixWeights:
    ops: torch.Tensor
    edges: Optional[torch.Tensor] = None
    index: Optional[torch.Tensor] = None


class MixedOp(nn.Module):
    """One edge of the search cell (see module docstring)."""

    def __init__(self, channels: int, stride: int, op_names: Sequence[str], k: int = 1) -> None:
        super().__init__()
        if channels % k:
            raise ValueError(f"partial channels: {channels} channels are not divisible by k={k}")
        self.op_names, self.k, self.stride = tuple(op_names), k, stride
        inner = channels // k
        ops = []
        for name in self.op_names:
            op = make_op(name, inner, stride, affine=False)
            if is_pool(name):
                op = nn.Sequential(op, nn.BatchNorm2d(inner, affine=False))
            ops.append(op)
        self.ops = nn.ModuleList(ops)
        self.skip_dropout = 0.0

    def forward(self, x: torch.Tensor, weights: torch.Tensor, index: Optional[int] = None) -> torch.Tensor:
        inner = x.shape[1] // self.k
        xa = x[:, :inner] if self.k > 1 else x
        if index is not None:
            out = weights[index] * self._run_op(index, xa)
        else:
            out = sum(w * self._run_op(i, xa) for i, w in enumerate(weights))
        if self.k == 1:
            return out
        rest = x[:, inner:]
        if self.stride == 2:
            rest = F.max_pool2d(rest, 2, 2, ceil_mode=True)  # odd sizes: same as the ops
        return channel_shuffle(torch.cat([out, rest], dim=1), self.k)

    def _run_op(self, i: int, x: torch.Tensor) -> torch.Tensor:
        out = self.ops[i](x)
        if self.skip_dropout > 0 and self.op_names[i] == SKIP and self.stride == 1:
            out = F.dropout(out, self.skip_dropout, self.training)
        return out


class SearchCell(nn.Module):
    def __init__(self, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool,
                 edge_ops: EdgeOps, k: int = 1) -> None:
        super().__init__()
        self.reduction = reduction
        self.preprocess0, self.preprocess1 = preprocess(c_pp, c_p, c, reduction_prev, affine=False)
        self.edges = nn.ModuleList(
            MixedOp(c, 2 if reduction and src < NUM_INPUTS else 1, edge_ops[e], k)
            for e, (_, src) in enumerate(EDGES))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, mix: MixWeights) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in NODES:
            total = 0
            for e in node_edges(node):
                index = None if mix.index is None else int(mix.index[e])
                h = self.edges[e](states[EDGES[e][1]], mix.ops[e], index)
                total = total + (h if mix.edges is None else mix.edges[e] * h)
            states.append(total)
        return torch.cat(states[NUM_INPUTS:], dim=1)


def full_edge_ops(op_names: Sequence[str]) -> dict[str, list[tuple[str, ...]]]:
    """Every op on every edge of both cell kinds (no P-DARTS pruning)."""
    return {kind: [tuple(op_names)] * len(EDGES) for kind in KINDS}


class SearchNetwork(nn.Module):
    """The proxy network of ``cells`` search cells over the space's op set
    ``op_names`` (what the op indices of encoded rows index). ``edge_ops``:
    per cell kind, the op names of each of the 14 edges (P-DARTS prunes
    them; None: every op everywhere); ``k``: PC-DARTS's partial channels."""

    def __init__(self, op_names: Sequence[str], input_channels: int, num_classes: int, channels: int, cells: int,
                 edge_ops: Optional[Mapping[str, EdgeOps]] = None, k: int = 1) -> None:
        super().__init__()
        self.op_names = tuple(op_names)
        edge_ops = full_edge_ops(op_names) if edge_ops is None else edge_ops
        self.edge_ops = {kind: [tuple(ops) for ops in edge_ops[kind]] for kind in KINDS}
        self.stem = stem(input_channels, STEM_MULTIPLIER * channels)
        self.cells = nn.ModuleList()
        for plan in cell_plan(channels, cells, lambda reduction: NUM_NODES):
            self.cells.append(SearchCell(*plan, self.edge_ops["reduce" if plan.reduction else "normal"], k))
        self.classifier = nn.Linear(NUM_NODES * plan.c, num_classes)
        self._mixes: dict[tuple, MixWeights] = {}

    def forward(self, x: torch.Tensor, normal: MixWeights, reduce: MixWeights,
                return_cells: bool = False):
        s0 = s1 = self.stem(x)
        outputs = []
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, reduce if cell.reduction else normal)
            outputs.append(s1)
        logits = self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))
        return (logits, outputs) if return_cells else logits

    def set_skip_dropout(self, p: float) -> None:
        for module in self.modules():
            if isinstance(module, MixedOp):
                module.skip_dropout = p

    def op_costs(self, reduction: bool) -> torch.Tensor:
        """(14, n_ops) parameter counts of each op, summed over the cells of
        one kind: the resource table of the SNAS penalty."""
        cells = [c for c in self.cells if c.reduction == reduction]
        rows = [[sum(p.numel() for p in op.parameters()) for op in mixed.ops]
                for mixed in cells[0].edges] if cells else []
        table = torch.tensor(rows, dtype=torch.float32)
        for cell in cells[1:]:
            table += torch.tensor([[sum(p.numel() for p in op.parameters()) for op in mixed.ops]
                                   for mixed in cell.edges], dtype=torch.float32)
        return table

    # ------------------------------------------------------------ Supernet protocol
    def path_depth(self) -> int:
        return len(self.cells)

    def path_prefix(self, depth: int) -> int:
        """16 (the normal half of the row) while cell ``depth`` and every
        cell before it are normal cells, else the whole row."""
        if any(cell.reduction for cell in self.cells[:depth + 1]):
            return ROW_WIDTH
        return HALF_WIDTH

    def check_rows(self, rows: np.ndarray) -> np.ndarray:
        """Encoded genotypes over ``op_names`` whose ops exist on their edges
        here (P-DARTS's pruned supernet keeps a few ops per edge)."""
        rows = check_cell_rows(rows, self.op_names)
        for part, kind in enumerate(KINDS):
            present = np.array([[name in ops for name in self.op_names] for ops in self.edge_ops[kind]])
            for col in range(part * HALF_WIDTH, (part + 1) * HALF_WIDTH, 2):
                node = NODES[(col % HALF_WIDTH) // (2 * PICKS)]
                edges = node_edges(node).start + rows[:, col]
                bad = np.flatnonzero(~present[edges, rows[:, col + 1]])
                if bad.size:
                    i = int(bad[0])
                    e = int(edges[i])
                    raise ValueError(f"cell architecture row {i}, {kind} cell, edge {EDGES[e]}: op "
                                     f"{self.op_names[rows[i, col + 1]]!r} is not in the supernet there "
                                     f"({', '.join(self.edge_ops[kind][e])})")
        return rows

    def path_begin(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.stem(x)
        return s, s

    def path_step(self, depth: int, state: tuple[torch.Tensor, torch.Tensor],
                  row: np.ndarray) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """Cell ``depth`` of sub-network ``row`` on (s0, s1) (module docstring)."""
        cell = self.cells[depth]
        s0, s1 = state
        out = cell(s0, s1, self.path_mix(row, "reduce" if cell.reduction else "normal", s1.device))
        return (s1, out), out

    def path_step_key(self, depth: int, row: np.ndarray) -> bytes:
        """Rows with the same half of cell ``depth``'s kind run the same cell
        there (the batched walk of nas_core.dcnas.features)."""
        part = KINDS.index("reduce" if self.cells[depth].reduction else "normal")
        return np.asarray(row, dtype=np.int64)[part * HALF_WIDTH:(part + 1) * HALF_WIDTH].tobytes()

    def path_logits(self, state: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return self.classifier(F.adaptive_avg_pool2d(state[1], 1).flatten(1))

    def path_mix(self, row: np.ndarray, kind: str, device: torch.device) -> MixWeights:
        """The one-path weights of half ``kind`` of ``row`` (cached per row)."""
        part = KINDS.index(kind)
        half = np.asarray(row, dtype=np.int64)[part * HALF_WIDTH:(part + 1) * HALF_WIDTH]
        key = (kind, half.tobytes(), str(device))
        if key not in self._mixes:
            if len(self._mixes) >= MIX_CACHE_SIZE:
                self._mixes.clear()
            self._mixes[key] = path_mix(half, self.op_names, device, self.edge_ops[kind])
        return self._mixes[key]

    def path_parameter_names(self, depth: int, row: np.ndarray) -> tuple[str, ...]:
        """Parameters of cell ``depth``'s two preprocessing layers and of the
        row's op on each of its 8 kept edges."""
        cell = self.cells[depth]
        kind = "reduce" if cell.reduction else "normal"
        prefix = f"cells.{depth}."
        names = [prefix + n for n, _ in cell.preprocess0.named_parameters(prefix="preprocess0")]
        names += [prefix + n for n, _ in cell.preprocess1.named_parameters(prefix="preprocess1")]
        half = np.asarray(row, dtype=np.int64)[KINDS.index(kind) * HALF_WIDTH:][:HALF_WIDTH]
        for k in range(NUM_NODES):
            for pick in range(PICKS):
                e = edge_index(NUM_INPUTS + k, int(half[4 * k + 2 * pick]))
                i = self.edge_ops[kind][e].index(self.op_names[int(half[4 * k + 2 * pick + 1])])
                names += [prefix + n for n, _ in cell.edges[e].ops[i].named_parameters(prefix=f"edges.{e}.ops.{i}")]
        return tuple(names)


def path_mix(half_row: np.ndarray, op_names: Sequence[str], device: torch.device,
             edge_ops: Optional[EdgeOps] = None) -> MixWeights:
    """One-path weights of one cell kind: weight 1 and the drawn op on the
    8 kept edges, weight 0 and ``none`` (or the edge's first op when P-DARTS
    pruned ``none`` there) on the others. ``edge_ops``: the supernet's op
    names per edge when they differ from ``op_names`` (P-DARTS)."""
    edge_ops = [tuple(op_names)] * len(EDGES) if edge_ops is None else [tuple(o) for o in edge_ops]
    index = torch.tensor([ops.index(ZERO) if ZERO in ops else 0 for ops in edge_ops], dtype=torch.long)
    weights = torch.zeros(len(EDGES), len(edge_ops[0]))
    for k in range(NUM_NODES):
        for pick in range(PICKS):
            src, op = int(half_row[4 * k + 2 * pick]), int(half_row[4 * k + 2 * pick + 1])
            e = edge_index(NUM_INPUTS + k, src)
            name = op_names[op]
            if name not in edge_ops[e]:
                raise ValueError(f"edge {EDGES[e]}: op {name!r} is not in the supernet there ({edge_ops[e]})")
            index[e] = edge_ops[e].index(name)
            weights[e, index[e]] = 1.0
    return MixWeights(weights.to(device), None, index.to(device))


class ArchParams(nn.Module):
    """alpha (14, n_ops) per cell kind, DARTS init 1e-3 * N(0, 1); with
    ``edge_norm`` also beta (14,) per cell kind (PC-DARTS)."""

    def __init__(self, n_ops: int, edge_norm: bool = False) -> None:
        super().__init__()
        n_edges = len(EDGES)
        self.alpha_normal = nn.Parameter(1e-3 * torch.randn(n_edges, n_ops))
        self.alpha_reduce = nn.Parameter(1e-3 * torch.randn(n_edges, n_ops))
        self.edge_norm = edge_norm
        if edge_norm:
            self.beta_normal = nn.Parameter(1e-3 * torch.randn(n_edges))
            self.beta_reduce = nn.Parameter(1e-3 * torch.randn(n_edges))

    def alpha(self, kind: str) -> torch.Tensor:
        return getattr(self, f"alpha_{kind}")

    def edge_weights(self, kind: str) -> Optional[torch.Tensor]:
        """softmax of beta over the edges entering each node, or None."""
        if not self.edge_norm:
            return None
        beta = getattr(self, f"beta_{kind}")
        parts = [F.softmax(beta[node_edges(n).start:node_edges(n).stop], dim=0) for n in NODES]
        return torch.cat(parts)
