"""The stand-alone network of a hierarchical genotype (Liu et al., ICLR 2018).

Level 1, the primitives (all of stride 1, padded to keep the spatial size,
C channels in and out; a conv is followed by BatchNorm and ReLU, as in the
paper): ``conv_1x1``, ``dw_conv_3x3`` (depthwise), ``sep_conv_3x3``
(depthwise 3x3 then pointwise 1x1), 3x3 max / average pooling, identity.

A DAG (a level-2 motif over primitives, or the level-3 cell over motifs)
computes node j from its incoming edges; only the edges on a path to the
output node are built. The paper merges a node's inputs by depthwise
(channel) concatenation; to keep every node at C channels (which the
primitives and the stacking need) the concatenation is followed by a 1x1
conv + BN + ReLU back to C channels (our choice; the paper does not say how
it keeps the width). A node with a single input takes it unchanged. (A plain
sum of the inputs was tried instead: without a normalisation after it, the
nested sums of dense random genotypes did not train on digits.)

The network is the paper's small CIFAR model: a 3x3 conv stem (C0 channels,
BN, ReLU), then ``cells_per_stage`` cells, a 3x3 separable conv of stride 2
that doubles the channels, ``cells_per_stage`` cells, another such
reduction, ``cells_per_stage`` cells, global average pooling and a linear
classifier. Every cell (and every use of a motif) has its own weights.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from nas_core.spaces.hierarchical.genotype import IDENTITY, HierarchicalGenotype, live_edges, motif_name, nodes_of

NUM_REDUCTIONS = 2


def conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups,
                                   bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=False))


def sep_conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """Depthwise 3x3 (stride ``stride``) -> pointwise 1x1 -> BN -> ReLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False),
                         nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=False))


PRIMITIVE_FACTORIES: dict[str, Callable[[int], nn.Module]] = {
    IDENTITY: lambda c: nn.Identity(),
    "conv_1x1": lambda c: conv_bn_relu(c, c, 1),
    "dw_conv_3x3": lambda c: conv_bn_relu(c, c, 3, groups=c),
    "sep_conv_3x3": lambda c: sep_conv(c, c),
    "max_pool_3x3": lambda c: nn.MaxPool2d(3, stride=1, padding=1),
    "avg_pool_3x3": lambda c: nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
}


class Dag(nn.Module):
    """One DAG of ``ops`` (dense, genotype.dag_edges order); ``make_op(name)``
    builds an edge's module; a node with several inputs concatenates them and
    projects back to ``channels``."""

    def __init__(self, ops: Sequence[str], channels: int, make_op: Callable[[str], nn.Module]) -> None:
        super().__init__()
        self.num_nodes = nodes_of(len(ops))
        self.edges = [(i, j) for i, j, _ in live_edges(ops)]
        self.ops = nn.ModuleDict({f"{i}_{j}": make_op(op) for i, j, op in live_edges(ops)})
        fan_in = {j: sum(1 for _, t in self.edges if t == j) for _, j in self.edges}
        self.merges = nn.ModuleDict({str(j): conv_bn_relu(k * channels, channels, 1)
                                     for j, k in fan_in.items() if k > 1})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes: dict[int, torch.Tensor] = {0: x}
        for j in sorted({j for _, j in self.edges}):
            inputs = [self.ops[f"{i}_{j}"](nodes[i]) for i, t in self.edges if t == j]
            nodes[j] = inputs[0] if len(inputs) == 1 else self.merges[str(j)](torch.cat(inputs, dim=1))
        return nodes[self.num_nodes - 1]


def build_cell(genotype: HierarchicalGenotype, channels: int) -> Dag:
    """The level-3 DAG whose motif edges are level-2 DAGs of primitives."""
    motifs = {motif_name(k): ops for k, ops in enumerate(genotype.motifs)}

    def make_motif(name: str) -> nn.Module:
        if name == IDENTITY:
            return nn.Identity()
        return Dag(motifs[name], channels, lambda op: PRIMITIVE_FACTORIES[op](channels))

    return Dag(genotype.cell, channels, make_motif)


class HierarchicalNet(nn.Module):
    """Stem, (cells, reduction) x 2, cells, global average pooling, classifier."""

    def __init__(self, genotype: HierarchicalGenotype, in_channels: int, num_classes: int, init_channels: int,
                 cells_per_stage: int) -> None:
        super().__init__()
        c = init_channels
        self.stem = conv_bn_relu(in_channels, c, 3)
        layers: list[nn.Module] = []
        for stage in range(NUM_REDUCTIONS + 1):
            layers += [build_cell(genotype, c) for _ in range(cells_per_stage)]
            if stage < NUM_REDUCTIONS:
                layers.append(sep_conv(c, 2 * c, stride=2))
                c *= 2
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(self.stem(x)).mean(dim=(2, 3)))
