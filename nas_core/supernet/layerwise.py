"""FBNet's supernet over a :class:`LayerwiseSpace`.

Supernet output of layer l (FBNet Eq. 5-6)::

    x_{l+1} = sum_i m_{l,i} * b_{l,i}(x_l),   m_l = GumbelSoftmax(theta_l, tau)

``theta`` (L x n_ops) starts at zero: a uniform distribution over ops.
The stem (3x3 conv, BN, ReLU) and head (1x1 conv, BN, ReLU, global average
pool, fc) are fixed and built as in the stand-alone network
(nas_core.spaces.layerwise.network), so a child's ``stem.*`` / ``head.*``
keys match the supernet's.

Supernet protocol (nas_core.supernet.base): a sub-network is an encoded
layer-wise genotype, the op index per layer; "layer" d is searchable layer
d, whose output depends on the first d + 1 entries of a row; its
parameters are those of op ``row[d]`` (``layers.{d}.ops.{row[d]}.*``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas_core.spaces.layerwise import LayerwiseSpace, build_op, make_head, make_stem


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

    # ------------------------------------------------------------ Supernet protocol
    def path_depth(self) -> int:
        return len(self.layers)

    def path_prefix(self, depth: int) -> int:
        return depth + 1

    def check_rows(self, rows: np.ndarray) -> np.ndarray:
        """``rows`` (count, layers) as int64 after checking every op index."""
        rows = np.asarray(rows)
        if rows.ndim != 2 or rows.shape[0] < 1:
            raise ValueError(f"architectures must be a non-empty (count, layers) array, got shape {rows.shape}")
        if rows.shape[1] != len(self.layers):
            raise ValueError(f"architectures have {rows.shape[1]} layers but the supernet has {len(self.layers)}")
        for depth, layer in enumerate(self.layers):
            top = int(rows[:, depth].max())
            if rows[:, depth].min() < 0 or top >= len(layer.ops):
                raise ValueError(f"layer {depth}: op index {top} out of range 0..{len(layer.ops) - 1}")
        return rows.astype(np.int64, copy=False)

    def path_begin(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x)

    def path_step(self, depth: int, state: torch.Tensor, row: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.layers[depth].ops[int(row[depth])](state)
        return y, y

    def path_step_key(self, depth: int, row: np.ndarray) -> int:
        """Rows with the same op at ``depth`` run the same block there (the
        batched walk of nas_core.dcnas.features)."""
        return int(row[depth])

    def path_logits(self, state: torch.Tensor) -> torch.Tensor:
        return self.head(state)

    def path_parameter_names(self, depth: int, row: np.ndarray) -> tuple[str, ...]:
        i = int(row[depth])
        return tuple(f"layers.{depth}.ops.{i}.{name}" for name, _ in self.layers[depth].ops[i].named_parameters())


def check_path(space: LayerwiseSpace, op_indices: Sequence[int]) -> list[int]:
    indices = [int(i) for i in op_indices]
    if len(indices) != space.num_layers:
        raise ValueError(f"path has {len(indices)} op indices, the space has {space.num_layers} layers")
    bad = [i for i in indices if not 0 <= i < space.num_ops]
    if bad:
        raise ValueError(f"path op indices {bad} out of range 0..{space.num_ops - 1}")
    return indices

