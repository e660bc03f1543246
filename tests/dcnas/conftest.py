"""A tiny fake supernet implementing the Supernet protocol
(nas_core.supernet.base) with configurable prefix widths, and per-epoch
states of a supernet."""
from __future__ import annotations

import zlib
from typing import Any, Sequence

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


def choices(c: int) -> nn.ModuleList:
    """Three candidates per row entry: k3, k1, skip (parameter-free)."""
    return nn.ModuleList([conv_bn(c, c, 3, 1), conv_bn(c, c, 1, 1), Skip()])


class FakeSupernet(nn.Module):
    """Layer l sums, over the row entries ``uses[l]``, candidate
    ``row[j]`` of entry j (k3, k1 or skip) applied to the previous state.
    ``uses = ((0,), (1,), (2,), (3,))`` is a layer-wise space (prefixes
    1..4); ``((0, 1), (0, 1), (2, 3), (0, 1))`` is cell-like (prefixes 2, 2,
    4, 4: the last layer reuses entries 0 and 1 but follows a layer that
    used 2 and 3). Counts ``path_step`` / ``path_parameter_names`` calls."""

    num_choices = 3

    def __init__(self, uses: Sequence[Sequence[int]] = ((0,), (1,), (2,), (3,)), channels: int = 4) -> None:
        super().__init__()
        self.uses = tuple(tuple(u) for u in uses)
        self.width = 1 + max(j for u in self.uses for j in u)
        self.stem = conv_bn(1, channels, 3, 1)
        self.layers = nn.ModuleList(nn.ModuleDict({str(j): choices(channels) for j in u}) for u in self.uses)
        self.steps = 0
        self.name_calls = 0

    def path_depth(self) -> int:
        return len(self.uses)

    def path_prefix(self, depth: int) -> int:
        return 1 + max(j for u in self.uses[:depth + 1] for j in u)

    def check_rows(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows)
        if rows.ndim != 2 or rows.shape[1] != self.width:
            raise ValueError(f"rows: expected shape (n, {self.width}), got {rows.shape}")
        bad = np.argwhere((rows < 0) | (rows >= self.num_choices))
        if bad.size:
            i, j = bad[0]
            raise ValueError(f"row {i}, entry {j}: value {rows[i, j]} outside 0..{self.num_choices - 1}")
        return rows.astype(np.int64)

    def path_begin(self, x: torch.Tensor) -> Any:
        return self.stem(x)

    def path_step(self, depth: int, state: Any, row: np.ndarray) -> tuple[Any, torch.Tensor]:
        self.steps += 1
        layer = self.layers[depth]
        y = sum(layer[str(j)][int(row[j])](state) for j in self.uses[depth])
        return y, y

    def path_parameter_names(self, depth: int, row: np.ndarray) -> tuple[str, ...]:
        self.name_calls += 1
        names = []
        for j in self.uses[depth]:
            op = self.layers[depth][str(j)][int(row[j])]
            names += [f"layers.{depth}.{j}.{int(row[j])}.{n}" for n, _ in op.named_parameters()]
        return tuple(names)


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


def keyed_states(model: nn.Module, epochs: int, drift: float = 0.3) -> list[dict[str, torch.Tensor]]:
    """Per-epoch state dicts whose floating entries depend only on each key's
    name and shape (seeded by crc32 of the key), not on how the module was
    built: weights ~ N(0, 1/fan_in), BatchNorm weights and running variances
    around 1, drifting by ``drift`` of their scale per epoch."""
    base = model.state_dict()
    states: list[dict[str, torch.Tensor]] = [{} for _ in range(epochs)]
    for key in sorted(base):
        value = base[key]
        if not value.is_floating_point():
            for state in states:
                state[key] = value.clone()
            continue
        gen = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        scale = (1.0 / max(1, value[0].numel())) ** 0.5 if value.dim() > 1 else 0.1
        current = scale * torch.randn(value.shape, generator=gen, dtype=torch.float64)
        if key.endswith("running_var"):
            current = 1.0 + current.abs()
        elif value.dim() == 1 and key.endswith("weight"):
            current = 1.0 + current
        for state in states:
            state[key] = current.to(value.dtype).clone()
            current = current + drift * scale * torch.randn(value.shape, generator=gen, dtype=torch.float64)
            if key.endswith("running_var"):
                current = current.abs()
    return states


@pytest.fixture
def fake_supernet() -> FakeSupernet:
    torch.manual_seed(0)
    return FakeSupernet()


@pytest.fixture
def cell_like_supernet() -> FakeSupernet:
    torch.manual_seed(0)
    return FakeSupernet(((0, 1), (0, 1), (2, 3), (0, 1)))


@pytest.fixture
def probe_batches() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return list(torch.randn(20, 1, 6, 6, generator=gen).split(8))


@pytest.fixture
def random_archs() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.unique(rng.integers(0, 3, size=(40, 4)), axis=0)
