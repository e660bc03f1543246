"""A tiny layer-wise supernet with the interface of
nas_core.supernet.layerwise.LayerwiseSupernet (.stem, .layers[l].ops[i],
.head, .theta), and a few per-epoch states of it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.train.one_thread import one_thread  # noqa: F401  (tiny models: one torch thread)


def conv_bn(c_in: int, c_out: int, k: int, stride: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class Skip(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class TinyLayer(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.ops = nn.ModuleList([conv_bn(c, c, 3, 1), conv_bn(c, c, 1, 1), Skip()])


class TinySupernet(nn.Module):
    op_names = ("k3", "k1", "skip")

    def __init__(self, num_layers: int = 4, channels: int = 4, num_classes: int = 3) -> None:
        super().__init__()
        self.stem = conv_bn(1, channels, 3, 1)
        self.layers = nn.ModuleList([TinyLayer(channels) for _ in range(num_layers)])
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))
        self.theta = nn.Parameter(torch.zeros(num_layers, len(self.op_names)))

    def forward_path(self, x: torch.Tensor, op_indices) -> torch.Tensor:
        x = self.stem(x)
        for layer, op in zip(self.layers, op_indices):
            x = layer.ops[int(op)](x)
        return self.head(x)


def epoch_states(model: nn.Module, epochs: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """State dicts drifting away from the initial weights epoch by epoch."""
    gen = torch.Generator().manual_seed(seed)
    states, state = [], {k: v.clone() for k, v in model.state_dict().items()}
    for _ in range(epochs):
        states.append({k: v.clone() for k, v in state.items()})
        for key, value in state.items():
            if value.is_floating_point():
                value.add_(0.3 * torch.randn(value.shape, generator=gen))
                if "running_var" in key:
                    value.abs_()
    return states


@pytest.fixture
def tiny_supernet() -> TinySupernet:
    torch.manual_seed(0)
    return TinySupernet()


@pytest.fixture
def probe_batches() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return list(torch.randn(20, 1, 6, 6, generator=gen).split(8))


@pytest.fixture
def random_archs() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.unique(rng.integers(0, 3, size=(40, 4)), axis=0)

