"""The stand-alone channel-ratio network (dc-nas.md §4.1, Figure 2): six
3×3 conv blocks (conv -> BatchNorm -> ReLU, padding 1), global average
pooling and one fully-connected classifier, and its analytic cost.

FLOPs are multiply-accumulates of the convs and the classifier (BatchNorm
and ReLU are folded or free at inference), the convention of the paper's
Tables 2-3; params count every learnable tensor, BatchNorm included.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

KERNEL = 3


class ChannelRatioNet(nn.Module):
    """Six conv blocks + GAP + FC. ``forward_layers`` also returns every
    block's output (the o^l of Eq. 7)."""

    def __init__(self, widths: Sequence[int], strides: Sequence[int], in_channels: int,
                 num_classes: int) -> None:
        super().__init__()
        blocks, c_in = [], in_channels
        for width, stride in zip(widths, strides):
            blocks.append(nn.Sequential(
                nn.Conv2d(c_in, width, KERNEL, stride=stride, padding=KERNEL // 2, bias=False),
                nn.BatchNorm2d(width), nn.ReLU(inplace=True)))
            c_in = width
        self.blocks = nn.ModuleList(blocks)
        self.classifier = nn.Linear(c_in, num_classes)

    def forward_layers(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        return outputs, self.classifier(x.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.classifier(x.mean(dim=(2, 3)))

    def layer_weights(self) -> list[torch.Tensor]:
        """The conv weight of every layer (the θ^l of Eq. 6)."""
        return [block[0].weight for block in self.blocks]


def init_weights(model: nn.Module, generator: torch.Generator) -> None:
    """Kaiming-normal convs, PyTorch-default linear, BN (1, 0), all drawn from
    ``generator`` so that networks built in parallel threads are reproducible
    without touching the global RNG."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu", generator=generator)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            bound = 1.0 / module.in_features ** 0.5
            nn.init.uniform_(module.weight, -bound, bound, generator=generator)
            nn.init.uniform_(module.bias, -bound, bound, generator=generator)


def conv_out(size: int, stride: int) -> int:
    pad = KERNEL // 2
    return (size + 2 * pad - KERNEL) // stride + 1


def analytic_cost(widths: Sequence[int], strides: Sequence[int], input_shape: Sequence[int],
                  num_classes: int) -> dict[str, int]:
    """Params and FLOPs (multiply-accumulates) of ``ChannelRatioNet`` for one
    input of shape (C, H, W)."""
    c_in, h, w = input_shape
    params = flops = 0
    for width, stride in zip(widths, strides):
        h, w = conv_out(h, stride), conv_out(w, stride)
        params += KERNEL * KERNEL * c_in * width + 2 * width
        flops += KERNEL * KERNEL * c_in * width * h * w
        c_in = width
    params += c_in * num_classes + num_classes
    flops += c_in * num_classes
    return {"params": int(params), "flops": int(flops)}
