"""The final (stand-alone) network of a cell genotype, and the pieces the
search supernet (nas_core.supernet.cell) shares with it.

Network layout (DARTS ``model_search.py`` / ``model.py``): stem conv3x3
(3C) + BN, then ``cells`` cells, reductions (stride 2, channels doubled) at
``cells // 3`` and ``2 * cells // 3``, global average pooling, linear
classifier. Each cell preprocesses its two inputs to C channels (a
:class:`FactorizedReduce` when the previous cell reduced). The final network
drops whole op outputs per sample (:class:`DropPath`, DARTS's drop path; not
on identity ops); the auxiliary head of the DARTS evaluation is not built.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from nas_core.spaces.cell.genotype import NUM_INPUTS, CellGenotype
from nas_core.spaces.cell.ops import FactorizedReduce, Identity, ReLUConvBN, make_op

STEM_MULTIPLIER = 3


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    if groups == 1:
        return x
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def reduction_layers(cells: int) -> set[int]:
    return {cells // 3, 2 * cells // 3}


def preprocess(c_pp: int, c_p: int, c: int, reduction_prev: bool, affine: bool) -> tuple[nn.Module, nn.Module]:
    """The layers bringing a cell's two inputs to ``c`` channels."""
    pre0 = FactorizedReduce(c_pp, c, affine) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0, affine)
    return pre0, ReLUConvBN(c_p, c, 1, 1, 0, affine)


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


def stem(c_in: int, c: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))


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
        self.preprocess0, self.preprocess1 = preprocess(c_pp, c_p, c, reduction_prev, affine=True)
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


class AuxiliaryHead(nn.Module):
    """DARTS's auxiliary classifier (AuxiliaryHeadCIFAR): ReLU, average
    pooling to 2x2, 1x1 conv to 128, BN, ReLU, 2x2 conv to 768, BN, ReLU,
    linear. DARTS pools an 8x8 map with a 5x5 window at stride 3 (2x2 out);
    adaptive pooling to 2x2 gives the same shape for any input size (our
    choice, so the head also fits 8x8 digits)."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False), nn.AdaptiveAvgPool2d(2),
            nn.Conv2d(channels, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class CellStack(nn.Module):
    """What every stacked-cell network shares once its subclass has built
    ``stem``, ``cells`` (GenotypeCell), ``classifier``, ``aux_at`` and, with
    the auxiliary head, ``auxiliary``: drop path and the forward pass."""

    def set_drop_path(self, p: float) -> None:
        for cell in self.cells:
            cell.drop.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        s0 = s1 = self.stem(x)
        auxiliary = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1)
            if i == self.aux_at and self.training and hasattr(self, "auxiliary") and len(s1) > 1:
                auxiliary = self.auxiliary(s1)  # a batch of one has no statistics for the head's BatchNorm
        logits = self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))
        return logits if auxiliary is None else (logits, auxiliary)


class CellNetwork(CellStack):
    """The network a genotype describes (deeper/wider than the search proxy:
    ``cells`` and ``channels`` from the space's ``final_cells`` /
    ``final_channels``); nas_core.spaces.export saves and reloads it. With
    ``auxiliary``, DARTS's auxiliary head reads the output of cell
    ``2 * cells // 3`` (the second reduction) and, in training mode only,
    ``forward`` returns ``(logits, auxiliary logits)`` (not for a batch of
    one image: the head's BatchNorm over a 1x1 map needs two; such a batch
    trains without the auxiliary loss)."""

    def __init__(self, genotype: CellGenotype, input_channels: int, num_classes: int,
                 channels: int, cells: int, auxiliary: bool = False) -> None:
        super().__init__()
        self.genotype = genotype
        self.stem = stem(input_channels, STEM_MULTIPLIER * channels)
        self.cells = nn.ModuleList()
        concats = {False: genotype.normal_concat, True: genotype.reduce_concat}
        self.aux_at = 2 * cells // 3
        for i, plan in enumerate(cell_plan(channels, cells, lambda reduction: len(concats[reduction]))):
            cell = genotype.reduce if plan.reduction else genotype.normal
            self.cells.append(GenotypeCell(cell, concats[plan.reduction], *plan))
            if i == self.aux_at and auxiliary:
                self.auxiliary = AuxiliaryHead(len(concats[plan.reduction]) * plan.c, num_classes)
        self.classifier = nn.Linear(len(concats[plan.reduction]) * plan.c, num_classes)

