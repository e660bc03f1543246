"""The fixed parts of every layer-wise network (stem, head) and the
stand-alone network of one genotype (``LayerwiseSpace.build_network``).

Stem: 3x3 conv (stride ``stem_stride``), BN, ReLU. Head: 1x1 conv, BN,
ReLU, global average pool, fc. The supernet (nas_core.supernet.layerwise)
builds the same stem and head, so a child's ``stem.*`` / ``head.*`` keys
match the supernet's.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from nas_core.spaces.layerwise.genotype import LayerwiseGenotype
from nas_core.spaces.layerwise.ops import build_op

if TYPE_CHECKING:
    from nas_core.spaces.layerwise.space import LayerwiseSpace


def make_stem(space: "LayerwiseSpace") -> nn.Module:
    cin = space.input_shape[0]
    return nn.Sequential(
        nn.Conv2d(cin, space.stem_channels, 3, stride=space.stem_stride, padding=1, bias=False),
        nn.BatchNorm2d(space.stem_channels),
        nn.ReLU(inplace=True),
    )


def make_head(space: "LayerwiseSpace") -> nn.Module:
    last = space.layers[-1].out_channels if space.layers else space.stem_channels
    return nn.Sequential(
        nn.Conv2d(last, space.head_channels, 1, bias=False),
        nn.BatchNorm2d(space.head_channels),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(space.head_channels, space.num_classes),
    )


class LayerwiseNet(nn.Module):
    """A standalone network: stem -> the chosen block per layer -> head."""

    def __init__(self, space: "LayerwiseSpace", genotype: LayerwiseGenotype) -> None:
        super().__init__()
        genotype.check(space)
        self.genotype = genotype
        self.stem = make_stem(space)
        self.layers = nn.Sequential(*(build_op(op, spec.in_channels, spec.out_channels, spec.stride)
                                      for op, spec in zip(genotype.ops, space.layers)))
        self.head = make_head(space)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.stem(x)))
