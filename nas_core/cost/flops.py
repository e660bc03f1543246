"""FLOPs and parameter counts, per image, for any space.

Convention: ``flops`` counts **multiply-adds** of convolutions and fully
connected layers (one per weight use), as FBNet, MobileNet and DC-NAS
Table 3 report "FLOPs"; BatchNorm, ReLU, residual adds and pooling are not
counted. ``torch.utils.flop_counter.FlopCounterMode`` counts 2 FLOPs per
multiply-add, so :func:`module_cost` halves its total. ``params`` counts
every learnable scalar (conv weights, BN scale and shift, fc weight and
bias). Spaces with an analytic cost model build it from :func:`conv_cost`
(the layer-wise space: nas_core.spaces.layerwise.cost).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class Cost:
    flops: int
    params: int

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.flops + other.flops, self.params + other.params)


ZERO = Cost(0, 0)


def conv_cost(cin: int, cout: int, kernel: int, groups: int, out_hw: tuple[int, int], bn: bool = True) -> Cost:
    """A bias-free conv (+ BatchNorm): (cin/g) * k*k * cout weights, each
    used once per output pixel."""
    weights = (cin // groups) * kernel * kernel * cout
    return Cost(weights * out_hw[0] * out_hw[1], weights + (2 * cout if bn else 0))


def module_cost(net: nn.Module, input_shape: Sequence[int], device: torch.device | str = "cpu") -> dict[str, int]:
    """Multiply-adds of one forward of ``net`` (on ``device``) on one image
    of ``input_shape`` (C, H, W), counted by FlopCounterMode (// 2), in eval
    mode without grad (the training mode is restored), and its parameters."""
    x = torch.zeros(1, *(int(v) for v in input_shape), device=device)
    was_training = net.training
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            net.eval()(x)
    finally:
        net.train(was_training)
    return {"flops": int(counter.get_total_flops()) // 2, "params": int(sum(p.numel() for p in net.parameters()))}
