"""The candidate operations of the DARTS cell space (Liu et al., ICLR 2019,
``cnn/operations.py``), registered by name in :data:`CELL_OPS`.

Every factory has the signature ``(channels, stride, affine) -> nn.Module``
and keeps the channel count; ``stride`` 2 halves the spatial size.
``affine=False`` is used inside search supernets (DARTS: the architecture
weights play the role of the BN scale), ``affine=True`` in final networks.

Choices where the paper is vague:
- pools are followed by a non-affine BN only in the search supernet (as the
  DARTS code does in its MixedOp); see :class:`nas_core.supernet.cell.MixedOp`.
- ``skip_connect`` with stride 2 is a :class:`FactorizedReduce` (two offset
  strided 1x1 convs concatenated), as in DARTS.
- the StacNAS op sets (S2/S3) need ``max_pool_5x5``, ``avg_pool_5x5`` and
  ``sep_conv_7x7``; they follow the same pattern as their 3x3 siblings.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from nas_core.registry import Registry

OpFactory = Callable[[int, int, bool], nn.Module]
CELL_OPS: Registry[OpFactory] = Registry("cell operation")


class ReLUConvBN(nn.Sequential):
    """ReLU -> conv(k, stride, padding) -> BN."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int,
                 affine: bool = True) -> None:
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
                         nn.BatchNorm2d(c_out, affine=affine))


class DilConv(nn.Sequential):
    """ReLU -> dilated depthwise conv -> pointwise conv -> BN."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int,
                 dilation: int, affine: bool = True) -> None:
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(c_in, c_in, kernel, stride=stride, padding=padding,
                                   dilation=dilation, groups=c_in, bias=False),
                         nn.Conv2d(c_in, c_out, 1, bias=False),
                         nn.BatchNorm2d(c_out, affine=affine))


class SepConv(nn.Sequential):
    """Two DilConv blocks with dilation 1 (DARTS: "applied twice"); only the
    first one is strided."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int,
                 affine: bool = True) -> None:
        super().__init__(DilConv(c_in, c_in, kernel, stride, padding, 1, affine),
                         DilConv(c_in, c_out, kernel, 1, padding, 1, affine))


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Zero(nn.Module):
    """The "none" op: zeros of the output shape (strided when reducing)."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, ::self.stride, ::self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halve the spatial size with two strided 1x1 convs, the second offset
    by one pixel, concatenated along channels (``c_out`` must be even)."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True) -> None:
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {c_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = nn.functional.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


def _pool(kind: str, kernel: int) -> OpFactory:
    cls = nn.MaxPool2d if kind == "max" else nn.AvgPool2d

    def make(c: int, stride: int, affine: bool) -> nn.Module:
        if kind == "max":
            return cls(kernel, stride=stride, padding=kernel // 2)
        return cls(kernel, stride=stride, padding=kernel // 2, count_include_pad=False)

    return make


def _sep(kernel: int) -> OpFactory:
    return lambda c, stride, affine: SepConv(c, c, kernel, stride, kernel // 2, affine)


def _dil(kernel: int) -> OpFactory:
    return lambda c, stride, affine: DilConv(c, c, kernel, stride, kernel - 1, 2, affine)


def _skip(c: int, stride: int, affine: bool) -> nn.Module:
    return Identity() if stride == 1 else FactorizedReduce(c, c, affine)


def _register_all() -> None:
    CELL_OPS.register("none")(lambda c, stride, affine: Zero(stride))
    CELL_OPS.register("skip_connect")(_skip)
    for kind in ("max", "avg"):
        for kernel in (3, 5):
            CELL_OPS.register(f"{kind}_pool_{kernel}x{kernel}")(_pool(kind, kernel))
    for kernel in (3, 5, 7):
        CELL_OPS.register(f"sep_conv_{kernel}x{kernel}")(_sep(kernel))
    for kernel in (3, 5):
        CELL_OPS.register(f"dil_conv_{kernel}x{kernel}")(_dil(kernel))


_register_all()


def make_op(name: str, channels: int, stride: int, affine: bool) -> nn.Module:
    """Build the registered op ``name`` (unknown names: a clear error)."""
    return CELL_OPS.get(name)(channels, stride, affine)


def is_pool(name: str) -> bool:
    return "_pool_" in name
