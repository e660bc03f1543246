"""FBNet's nine candidate blocks, registered by name in :data:`OPS`.

A block (reference-notes.md, FBNet; DC-NAS §4.2)::

    1x1 conv (groups g, C_in -> e*C_in) -> BN -> ReLU -> channel shuffle (g > 1)
    -> kxk depthwise conv -> BN -> ReLU
    -> 1x1 conv (groups g, e*C_in -> C_out) -> BN          (no ReLU after the last conv)
    + x                                                    (when stride 1 and C_in == C_out)

Choices where the papers differ or are vague:

* **Stride.** The stride-2 of a block sits on the *first 1x1 conv*, as DC-NAS
  §4.2 states ("when the stride of the block s = 2, the stride of the first
  1x1 convolution is 2"). FBNet's released code strides the depthwise conv
  instead; striding the 1x1 conv makes the depthwise and the last 1x1 conv
  run at the output resolution, so a block's multiply-adds are
  ``(C_in/g * e*C_in + k*k * e*C_in + e*C_in/g * C_out) * H_out * W_out``.
* **Channel shuffle** (ShuffleNet) follows the first grouped 1x1 conv so the
  second grouped 1x1 conv mixes information across both groups: view the
  channels as (g, C/g), transpose, flatten.
* **skip** is the identity where the layer keeps its shape. Where the layer
  changes stride or channels the identity is impossible, so "skip" becomes a
  strided 1x1 conv + BN (no ReLU) — the cheapest projection, the choice of
  FBNet's public re-implementations.
* Convolutions have no bias (each is followed by BatchNorm).

Each registered entry is a :class:`BlockOp`: calling it with
``(in_channels, out_channels, stride)`` builds the module; its fields
(kernel, expansion, groups) feed the analytic cost model (cost.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nas_core.registry import Registry

#: Candidate blocks in FBNet's order (also the column order of every table).
FBNET_OP_NAMES: tuple[str, ...] = (
    "k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip",
)


@dataclass(frozen=True)
class BlockOp:
    """One candidate block type. ``kernel == 0`` marks ``skip``."""

    name: str
    kernel: int
    expansion: int
    groups: int

    @property
    def is_skip(self) -> bool:
        return self.kernel == 0

    def __call__(self, in_channels: int, out_channels: int, stride: int) -> nn.Module:
        if self.is_skip:
            return make_skip(in_channels, out_channels, stride)
        return FBNetBlock(in_channels, out_channels, stride, self.kernel, self.expansion, self.groups)


OPS: Registry[BlockOp] = Registry("layer-wise op")


def _parse(name: str) -> BlockOp:
    """``k{kernel}_e{expansion}[_g{groups}]`` or ``skip``."""
    if name == "skip":
        return BlockOp(name, 0, 1, 1)
    parts = name.split("_")
    groups = int(parts[2][1:]) if len(parts) == 3 else 1
    return BlockOp(name, int(parts[0][1:]), int(parts[1][1:]), groups)


for _name in FBNET_OP_NAMES:
    OPS.register(_name)(_parse(_name))


class ChannelShuffle(nn.Module):
    """ShuffleNet's channel shuffle: (N, g*c, H, W) -> view (N, g, c) ->
    transpose -> (N, c*g, H, W)."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int, relu: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return layers


def _check_block_args(cin: int, cout: int, stride: int, groups: int) -> None:
    if stride not in (1, 2):
        raise ValueError(f"layer-wise block stride = {stride}: allowed 1 or 2")
    if cin % groups or cout % groups:
        raise ValueError(f"a block with groups={groups} needs channels divisible by {groups}; "
                         f"got in_channels={cin}, out_channels={cout}")


class FBNetBlock(nn.Module):
    """Inverted-residual block of FBNet (see the module docstring)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int,
                 kernel: int, expansion: int, groups: int = 1) -> None:
        super().__init__()
        _check_block_args(in_channels, out_channels, stride, groups)
        mid = in_channels * expansion
        expand = _conv_bn(in_channels, mid, 1, stride, groups, relu=True)
        if groups > 1:
            expand.append(ChannelShuffle(groups))
        self.body = nn.Sequential(
            *expand,
            *_conv_bn(mid, mid, kernel, 1, mid, relu=True),
            *_conv_bn(mid, out_channels, 1, 1, groups, relu=False),
        )
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out + x if self.residual else out


def make_skip(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """Identity where shapes match, else a strided 1x1 conv + BN."""
    _check_block_args(in_channels, out_channels, stride, 1)
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(*_conv_bn(in_channels, out_channels, 1, stride, 1, relu=False))


def build_op(name: str, in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """Build the registered block ``name`` (unknown names: a clear error)."""
    return OPS.get(name)(in_channels, out_channels, stride)
