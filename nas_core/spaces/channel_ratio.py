"""Channel-ratio search space (dc-nas.md §4.1, Figure 2, Tables 1-2).

A baseline of six 3×3 conv layers (conv -> BatchNorm -> ReLU) and one
fully-connected classifier after global average pooling. Layer l has
``round(base_widths[l] * ratio_l)`` output channels (at least 1), with
ratio_l ∈ ``ratios`` (paper: 1/4, 1/2, 1, 2, 4), so the space holds
``len(ratios) ** 6`` architectures (5^6 = 15,625). The genotype is the tuple of
six ratios.

Choices where the paper is vague (it only says "six convolutional layers and
a fully-connected layer"): BatchNorm after every conv, padding 1, per-layer
strides from params (8×8 digits: 1,1,2,1,2,1 -> 8,8,4,4,2,2), global average
pooling before the classifier. FLOPs are counted as multiply-accumulates of
the convs and the classifier (BatchNorm and ReLU are folded or free at
inference), the convention of the paper's Tables 2-3; params count every
learnable tensor, BatchNorm included.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from nas_core.spaces import SPACES

NUM_LAYERS = 6
KERNEL = 3


@dataclass(frozen=True)
class ChannelRatioGenotype:
    """One architecture: the channel ratio of each of the six conv layers."""

    ratios: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.ratios) != NUM_LAYERS:
            raise ValueError(f"channel-ratio genotype needs {NUM_LAYERS} ratios, got {len(self.ratios)}: "
                             f"{self.ratios}")
        object.__setattr__(self, "ratios", tuple(float(r) for r in self.ratios))

    def to_json(self) -> str:
        return json.dumps({"space": "channel_ratio", "ratios": list(self.ratios)})

    @classmethod
    def from_json(cls, text: str) -> "ChannelRatioGenotype":
        data = json.loads(text)
        if data.get("space") != "channel_ratio" or "ratios" not in data:
            raise ValueError(f"not a channel-ratio genotype: {text[:200]}")
        return cls(tuple(data["ratios"]))

    def __str__(self) -> str:
        return ", ".join(f"{r:g}" for r in self.ratios)


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


@dataclass(frozen=True)
class ChannelRatioSpace:
    """The space: enumeration, sampling, model building and analytic cost."""

    base_widths: tuple[int, ...] = (8, 8, 16, 16, 32, 32)
    ratios: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
    strides: tuple[int, ...] = (1, 1, 2, 1, 2, 1)
    name = "channel_ratio"
    num_layers = NUM_LAYERS

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_widths", tuple(int(w) for w in self.base_widths))
        object.__setattr__(self, "ratios", tuple(float(r) for r in self.ratios))
        object.__setattr__(self, "strides", tuple(int(s) for s in self.strides))
        if len(self.base_widths) != NUM_LAYERS or len(self.strides) != NUM_LAYERS:
            raise ValueError(f"channel-ratio space needs {NUM_LAYERS} base widths and strides, got "
                             f"{self.base_widths} and {self.strides}")
        if len(set(self.ratios)) != len(self.ratios) or min(self.ratios) <= 0:
            raise ValueError(f"channel ratios must be distinct and positive, got {self.ratios}")

    @classmethod
    def from_config(cls, cfg) -> "ChannelRatioSpace":
        """Build from an ``AblationConfig`` (params.yaml section ``ablation``)."""
        return cls(tuple(cfg.base_widths), tuple(cfg.ratios), tuple(cfg.strides))

    def size(self) -> int:
        return len(self.ratios) ** NUM_LAYERS

    def enumerate(self) -> Iterator[ChannelRatioGenotype]:
        """Every genotype, in the mixed-radix order of ``genotype_at``."""
        for combo in itertools.product(self.ratios, repeat=NUM_LAYERS):
            yield ChannelRatioGenotype(combo)

    def genotype_at(self, index: int) -> ChannelRatioGenotype:
        if not 0 <= index < self.size():
            raise IndexError(f"architecture index {index} outside 0..{self.size() - 1}")
        digits = np.unravel_index(index, (len(self.ratios),) * NUM_LAYERS)
        return ChannelRatioGenotype(tuple(self.ratios[int(d)] for d in digits))

    def index_of(self, genotype: ChannelRatioGenotype) -> int:
        try:
            digits = [self.ratios.index(r) for r in genotype.ratios]
        except ValueError:
            raise ValueError(f"genotype ({genotype}) uses a ratio outside {self.ratios}") from None
        return int(np.ravel_multi_index(digits, (len(self.ratios),) * NUM_LAYERS))

    def sample(self, n: int, seed: int) -> list[int]:
        """``n`` distinct architecture indices, uniformly without replacement
        (Algorithm 1 line 2), sorted so that the order does not depend on
        the draw."""
        if not 1 <= n <= self.size():
            raise ValueError(f"cannot sample {n} distinct architectures from a space of {self.size()}")
        rng = np.random.default_rng(seed)
        return sorted(int(i) for i in rng.choice(self.size(), size=n, replace=False))

    def widths(self, genotype: ChannelRatioGenotype) -> list[int]:
        return [max(1, round(b * r)) for b, r in zip(self.base_widths, genotype.ratios)]

    def build(self, genotype: ChannelRatioGenotype, in_channels: int, num_classes: int,
              generator: torch.Generator | None = None) -> ChannelRatioNet:
        model = ChannelRatioNet(self.widths(genotype), self.strides, in_channels, num_classes)
        if generator is not None:
            init_weights(model, generator)
        return model

    def cost(self, genotype: ChannelRatioGenotype, input_shape: Sequence[int],
             num_classes: int) -> dict[str, int]:
        """Analytic params and FLOPs (multiply-accumulates) for one input of
        shape (C, H, W)."""
        c_in, h, w = input_shape
        params = flops = 0
        for width, stride in zip(self.widths(genotype), self.strides):
            h, w = _conv_out(h, stride), _conv_out(w, stride)
            params += KERNEL * KERNEL * c_in * width + 2 * width
            flops += KERNEL * KERNEL * c_in * width * h * w
            c_in = width
        params += c_in * num_classes + num_classes
        flops += c_in * num_classes
        return {"params": int(params), "flops": int(flops)}


def _conv_out(size: int, stride: int) -> int:
    pad = KERNEL // 2
    return (size + 2 * pad - KERNEL) // stride + 1


#: Base widths and strides per data preset (8×8 digits, 28×28 MNIST, 32×32 CIFAR).
PRESETS: dict[str, dict[str, tuple[int, ...]]] = {
    "digits": {"base_widths": (8, 8, 16, 16, 32, 32), "strides": (1, 1, 2, 1, 2, 1)},
    "mnist": {"base_widths": (8, 8, 16, 16, 32, 32), "strides": (2, 1, 2, 1, 2, 1)},
    "cifar": {"base_widths": (16, 16, 32, 32, 64, 64), "strides": (1, 1, 2, 1, 2, 1)},
}


def channel_ratio_space(preset: str, input_shape: Sequence[int], num_classes: int) -> ChannelRatioSpace:
    """Registry factory (``SPACES``): the space for a preset. ``input_shape``
    and ``num_classes`` are accepted for the common factory signature; the
    network is sized to them when built."""
    if preset not in PRESETS:
        raise ValueError(f"channel_ratio preset {preset!r}: allowed {', '.join(PRESETS)}")
    return ChannelRatioSpace(**PRESETS[preset])


SPACES.register("channel_ratio")(channel_ratio_space)
