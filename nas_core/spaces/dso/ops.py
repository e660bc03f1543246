"""Candidate operations of a DSO-NAS block (dso-nas.md §3.1, normal
setting): separable convolutions (depthwise k×k, pointwise 1×1, then
BatchNorm and ReLU: "each convolution is applied in the order
conv-batchnorm-ReLU") and 3×3 average / max pooling, all stride 1 and
channel-preserving. ``sep_conv_7x7`` is the fifth op of the paper's N = 5
ablation (§4.5.4).

Each op has an analytic cost per image on a C×H×W input (:func:`op_cost`):
``flops`` multiply-adds of its convolutions (pooling and BatchNorm are not
counted: nas_core.cost.flops's convention), ``params`` and ``mac``, the
memory access cost of ShuffleNet V2's guideline, counted in elements per
layer: input feature map + output feature map + weights of every conv and
pooling layer (BatchNorm folds into the conv, ReLU runs in place).
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from nas_core.registry import Registry


@dataclass(frozen=True)
class OpSpec:
    """``kind``: ``sep`` (separable conv), ``avg`` or ``max`` (pooling)."""

    kind: str
    kernel: int


DSO_OPS: Registry[OpSpec] = Registry("dso op")
for _name, _spec in {"sep_conv_3x3": OpSpec("sep", 3), "sep_conv_5x5": OpSpec("sep", 5),
                     "sep_conv_7x7": OpSpec("sep", 7), "avg_pool_3x3": OpSpec("avg", 3),
                     "max_pool_3x3": OpSpec("max", 3)}.items():
    DSO_OPS.register(_name)(_spec)


@dataclass(frozen=True)
class DSOCost:
    """Multiply-adds, memory access cost (elements) and parameters."""

    flops: int = 0
    mac: int = 0
    params: int = 0

    def __add__(self, other: "DSOCost") -> "DSOCost":
        return DSOCost(self.flops + other.flops, self.mac + other.mac, self.params + other.params)


def conv_layer_cost(cin: int, cout: int, kernel: int, groups: int, hw_in: tuple[int, int],
                    hw_out: tuple[int, int], bn: bool = True) -> DSOCost:
    """One bias-free conv (+ BatchNorm): weights (cin/g)·k²·cout, each used
    once per output pixel; MAC = input + output maps + weights."""
    weights = (cin // groups) * kernel * kernel * cout
    out = cout * hw_out[0] * hw_out[1]
    return DSOCost(flops=weights * hw_out[0] * hw_out[1], mac=cin * hw_in[0] * hw_in[1] + out + weights,
                   params=weights + (2 * cout if bn else 0))


def op_cost(name: str, channels: int, hw: tuple[int, int]) -> DSOCost:
    """Cost of op ``name`` on a ``channels``×H×W map (module docstring)."""
    spec = DSO_OPS.get(name)
    if spec.kind == "sep":
        return (conv_layer_cost(channels, channels, spec.kernel, channels, hw, hw, bn=False)
                + conv_layer_cost(channels, channels, 1, 1, hw, hw))
    return DSOCost(mac=2 * channels * hw[0] * hw[1])


class SepConv(nn.Sequential):
    """Depthwise k×k -> pointwise 1×1 -> BatchNorm -> ReLU."""

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__(nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=channels, bias=False),
                         nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels),
                         nn.ReLU(inplace=False))


def make_op(name: str, channels: int) -> nn.Module:
    spec = DSO_OPS.get(name)
    if spec.kind == "sep":
        return SepConv(channels, spec.kernel)
    if spec.kind == "avg":
        return nn.AvgPool2d(spec.kernel, stride=1, padding=spec.kernel // 2, count_include_pad=False)
    return nn.MaxPool2d(spec.kernel, stride=1, padding=spec.kernel // 2)
