"""FBNet's supernet over a :class:`LayerwiseSpace`, and the standalone child
network of one genotype.

Supernet output of layer l (FBNet Eq. 5-6)::

    x_{l+1} = sum_i m_{l,i} * b_{l,i}(x_l),   m_l = GumbelSoftmax(theta_l, tau)

``theta`` (L x n_ops) starts at zero: a uniform distribution over ops.
The stem (3x3 conv, BN, ReLU) and head (1x1 conv, BN, ReLU, global average
pool, fc) are fixed; :func:`build_child` builds the same stem, blocks and
head, so a child's ``stem.*`` / ``head.*`` keys match the supernet's.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nas_core.spaces.genotype import Genotype
from nas_core.spaces.layerwise import LayerwiseSpace
from nas_core.spaces.ops import build_op


def make_stem(space: LayerwiseSpace) -> nn.Module:
    cin = space.input_shape[0]
    return nn.Sequential(
        nn.Conv2d(cin, space.stem_channels, 3, stride=space.stem_stride, padding=1, bias=False),
        nn.BatchNorm2d(space.stem_channels),
        nn.ReLU(inplace=True),
    )


def make_head(space: LayerwiseSpace) -> nn.Module:
    last = space.layers[-1].out_channels if space.layers else space.stem_channels
    return nn.Sequential(
        nn.Conv2d(last, space.head_channels, 1, bias=False),
        nn.BatchNorm2d(space.head_channels),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(space.head_channels, space.num_classes),
    )


class MixedLayer(nn.Module):
    """All candidate blocks of one layer; ``ops[i]`` is candidate i in
    ``space.op_names`` order."""

    def __init__(self, space: LayerwiseSpace, index: int) -> None:
        super().__init__()
        spec = space.layers[index]
        self.ops = nn.ModuleList(build_op(name, spec.in_channels, spec.out_channels, spec.stride)
                                 for name in space.op_names)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        out = weights[0] * self.ops[0](x)
        for w, op in zip(weights[1:], self.ops[1:]):
            out = out + w * op(x)
        return out


def gumbel_softmax_mask(theta: torch.Tensor, temperature: float, hard: bool = False) -> torch.Tensor:
    """m = softmax((theta + g) / tau) per row, g ~ Gumbel(0, 1), drawn from
    torch's global RNG (its state is part of every checkpoint). ``hard``:
    one-hot forward with the soft gradient (straight-through)."""
    return F.gumbel_softmax(theta, tau=temperature, hard=hard, dim=-1)


class LayerwiseSupernet(nn.Module):
    """Stem -> ``layers`` (one :class:`MixedLayer` per searchable layer) ->
    head, with architecture logits ``theta`` (L, n_ops)."""

    def __init__(self, space: LayerwiseSpace) -> None:
        super().__init__()
        self.space = space
        self.stem = make_stem(space)
        self.layers = nn.ModuleList(MixedLayer(space, i) for i in range(space.num_layers))
        self.head = make_head(space)
        self.theta = nn.Parameter(torch.zeros(space.num_layers, space.num_ops))

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter except ``theta`` (the SGD group)."""
        return [p for name, p in self.named_parameters() if name != "theta"]

    def sample_mask(self, temperature: float, hard: bool = False) -> torch.Tensor:
        return gumbel_softmax_mask(self.theta, temperature, hard)

    def probabilities(self) -> torch.Tensor:
        return F.softmax(self.theta, dim=1)

    def forward(self, x: torch.Tensor, temperature: float, hard: bool = False) -> torch.Tensor:
        return self.forward_weighted(x, self.sample_mask(temperature, hard))

    def forward_weighted(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits with layer l's output = sum_i mask[l, i] * op_i(x)."""
        h = self.stem(x)
        for layer, weights in zip(self.layers, mask):
            h = layer(h, weights)
        return self.head(h)

    def forward_path(self, x: torch.Tensor, op_indices: Sequence[int]) -> torch.Tensor:
        """Logits of one sub-network: only op ``op_indices[l]`` runs in layer l."""
        indices = check_path(self.space, op_indices)
        h = self.stem(x)
        for layer, i in zip(self.layers, indices):
            h = layer.ops[i](h)
        return self.head(h)


def check_path(space: LayerwiseSpace, op_indices: Sequence[int]) -> list[int]:
    indices = [int(i) for i in op_indices]
    if len(indices) != space.num_layers:
        raise ValueError(f"path has {len(indices)} op indices, the space has {space.num_layers} layers")
    bad = [i for i in indices if not 0 <= i < space.num_ops]
    if bad:
        raise ValueError(f"path op indices {bad} out of range 0..{space.num_ops - 1}")
    return indices


class LayerwiseNet(nn.Module):
    """A standalone network: stem -> the chosen block per layer -> head."""

    def __init__(self, space: LayerwiseSpace, genotype: Genotype) -> None:
        super().__init__()
        genotype.check(space)
        self.genotype = genotype
        self.stem = make_stem(space)
        self.layers = nn.Sequential(*(build_op(op, spec.in_channels, spec.out_channels, spec.stride)
                                      for op, spec in zip(genotype.ops, space.layers)))
        self.head = make_head(space)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.stem(x)))


def build_child(space: LayerwiseSpace, genotype: Genotype) -> nn.Module:
    """The network of ``genotype`` for retraining from scratch."""
    return LayerwiseNet(space, genotype)
