"""Cell supernet shared by the differentiable strategies, and the final
network built from a :class:`~nas_core.spaces.cell.CellGenotype`.

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

Network layout (DARTS ``model_search.py``): stem conv3x3 (3C) + BN, then
``cells`` cells, reductions (stride 2, channels doubled) at ``cells // 3``
and ``2 * cells // 3``, global average pooling, linear classifier.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from nas_core.io import atomic_dir, load_tensors
from nas_core.spaces.cell import EDGES, NUM_INPUTS, NUM_NODES, SKIP, CellGenotype, node_edges
from nas_core.spaces.cell_ops import FactorizedReduce, Identity, ReLUConvBN, is_pool, make_op

STEM_MULTIPLIER = 3


@dataclass
class MixWeights:
    ops: torch.Tensor
    edges: Optional[torch.Tensor] = None
    index: Optional[torch.Tensor] = None


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    if groups == 1:
        return x
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def reduction_layers(cells: int) -> set[int]:
    return {cells // 3, 2 * cells // 3}


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


def _preprocess(c_pp: int, c_p: int, c: int, reduction_prev: bool, affine: bool) -> tuple[nn.Module, nn.Module]:
    pre0 = FactorizedReduce(c_pp, c, affine) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0, affine)
    return pre0, ReLUConvBN(c_p, c, 1, 1, 0, affine)


class SearchCell(nn.Module):
    def __init__(self, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool,
                 edge_ops: Sequence[Sequence[str]], k: int = 1) -> None:
        super().__init__()
        self.reduction = reduction
        self.preprocess0, self.preprocess1 = _preprocess(c_pp, c_p, c, reduction_prev, affine=False)
        self.edges = nn.ModuleList(
            MixedOp(c, 2 if reduction and src < NUM_INPUTS else 1, edge_ops[e], k)
            for e, (_, src) in enumerate(EDGES))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, mix: MixWeights) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in range(NUM_INPUTS, NUM_INPUTS + NUM_NODES):
            total = 0
            for e in node_edges(node):
                index = None if mix.index is None else int(mix.index[e])
                h = self.edges[e](states[EDGES[e][1]], mix.ops[e], index)
                total = total + (h if mix.edges is None else mix.edges[e] * h)
            states.append(total)
        return torch.cat(states[NUM_INPUTS:], dim=1)


class CellPlan(NamedTuple):
    c_pp: int
    c_p: int
    c: int
    reduction: bool
    reduction_prev: bool


def cell_plan(channels: int, cells: int, multiplier: Callable[[bool], int]) -> list[CellPlan]:
    """Channel bookkeeping of DARTS's network: the stem gives 3C channels;
    a reduction cell doubles C; a cell outputs ``multiplier(reduction)`` x C
    channels (the number of concatenated nodes)."""
    plans, reduction_prev = [], False
    c_pp = c_p = STEM_MULTIPLIER * channels
    c = channels
    for i in range(cells):
        reduction = i in reduction_layers(cells)
        c = c * 2 if reduction else c
        plans.append(CellPlan(c_pp, c_p, c, reduction, reduction_prev))
        reduction_prev = reduction
        c_pp, c_p = c_p, multiplier(reduction) * c
    return plans


def _stem(c_in: int, c: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))


class SearchNetwork(nn.Module):
    """The proxy network of ``cells`` search cells. ``edge_ops_normal`` /
    ``edge_ops_reduce``: one op-name list per edge (14 lists)."""

    def __init__(self, input_channels: int, num_classes: int, channels: int, cells: int,
                 edge_ops_normal: Sequence[Sequence[str]], edge_ops_reduce: Sequence[Sequence[str]],
                 k: int = 1) -> None:
        super().__init__()
        self.stem = _stem(input_channels, STEM_MULTIPLIER * channels)
        self.cells = nn.ModuleList()
        for plan in cell_plan(channels, cells, lambda reduction: NUM_NODES):
            ops = edge_ops_reduce if plan.reduction else edge_ops_normal
            self.cells.append(SearchCell(*plan, ops, k))
        self.classifier = nn.Linear(NUM_NODES * plan.c, num_classes)

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
        parts = [F.softmax(beta[node_edges(n).start:node_edges(n).stop], dim=0)
                 for n in range(NUM_INPUTS, NUM_INPUTS + NUM_NODES)]
        return torch.cat(parts)


# ---------------------------------------------------------------- final network

class DropPath(nn.Module):
    """Drop a whole op output per sample with probability ``p`` (training)."""

    def __init__(self) -> None:
        super().__init__()
        self.p = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p <= 0:
            return x
        keep = 1.0 - self.p
        mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
        return x / keep * mask


class GenotypeCell(nn.Module):
    def __init__(self, cell: Sequence[tuple[str, int]], concat: Sequence[int], c_pp: int, c_p: int, c: int,
                 reduction: bool, reduction_prev: bool) -> None:
        super().__init__()
        self.reduction, self.concat = reduction, tuple(concat)
        self.preprocess0, self.preprocess1 = _preprocess(c_pp, c_p, c, reduction_prev, affine=True)
        self.inputs = tuple(src for _, src in cell)
        self.ops = nn.ModuleList(make_op(op, c, 2 if reduction and src < NUM_INPUTS else 1, affine=True)
                                 for op, src in cell)
        self.drop = DropPath()

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(0, len(self.ops), NUM_INPUTS):
            states.append(sum(self._edge(j, states) for j in range(i, i + NUM_INPUTS)))
        return torch.cat([states[n] for n in self.concat], dim=1)

    def _edge(self, j: int, states: list[torch.Tensor]) -> torch.Tensor:
        out = self.ops[j](states[self.inputs[j]])
        return out if isinstance(self.ops[j], Identity) else self.drop(out)


class CellNetwork(nn.Module):
    """The network a genotype describes (deeper/wider than the proxy for
    retraining: ``cells`` and ``channels`` from params). ``build`` holds the
    constructor arguments so the network can be exported and rebuilt."""

    def __init__(self, genotype: CellGenotype, input_channels: int, num_classes: int,
                 channels: int, cells: int) -> None:
        super().__init__()
        self.genotype = genotype
        self.build = {"input_channels": input_channels, "num_classes": num_classes,
                      "channels": channels, "cells": cells}
        self.stem = _stem(input_channels, STEM_MULTIPLIER * channels)
        self.cells = nn.ModuleList()
        concats = {False: genotype.normal_concat, True: genotype.reduce_concat}
        for plan in cell_plan(channels, cells, lambda reduction: len(concats[reduction])):
            cell = genotype.reduce if plan.reduction else genotype.normal
            self.cells.append(GenotypeCell(cell, concats[plan.reduction], *plan))
        self.classifier = nn.Linear(len(concats[plan.reduction]) * plan.c, num_classes)

    def set_drop_path(self, p: float) -> None:
        for cell in self.cells:
            cell.drop.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))


EXPORT_WEIGHTS = "state_dict.pt"
EXPORT_META = "network.json"


def export_network(net: CellNetwork, path: str | Path, extra: Optional[dict] = None) -> Path:
    """Write ``path/`` atomically: ``state_dict.pt`` (tensors only) and
    ``network.json`` (genotype + constructor arguments + ``extra``)."""
    path = Path(path)
    meta = {"genotype": net.genotype.to_dict(), "build": net.build, "extra": extra or {}}
    with atomic_dir(path) as tmp:
        torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, tmp / EXPORT_WEIGHTS)
        (tmp / EXPORT_META).write_text(json.dumps(meta, indent=2) + "\n")
    return path


def load_exported(path: str | Path, device: torch.device | str = "cpu") -> CellNetwork:
    """Rebuild an exported network in one call (weights loaded with
    ``weights_only=True``); the network is returned in eval mode."""
    path = Path(path)
    meta_file, weights_file = path / EXPORT_META, path / EXPORT_WEIGHTS
    for f in (meta_file, weights_file):
        if not f.is_file():
            raise FileNotFoundError(f"{f}: missing; an exported cell network is a directory with "
                                    f"{EXPORT_META} and {EXPORT_WEIGHTS} (written by export_network)")
    meta = json.loads(meta_file.read_text())
    net = CellNetwork(CellGenotype.from_dict(meta["genotype"]), **meta["build"])
    net.load_state_dict(load_tensors(weights_file, map_location="cpu"))
    return net.to(device).eval()
