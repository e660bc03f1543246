"""Tiny real data (scikit-learn digits, 8×8) and a narrow channel-ratio
space, so a separately trained network takes well under a second."""
from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits

from nas_core.ablation.loop import Split
from nas_core.ablation.separate import ArchData, TrainSpec
from nas_core.spaces import SearchSpace, make_space


@pytest.fixture(scope="session")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    d = load_digits()
    return torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0, torch.tensor(d.target)


@pytest.fixture(scope="session")
def tiny_data(digits) -> ArchData:
    x, y = digits
    train = Split(x[:240], y[:240])
    return ArchData(train=train, val=Split(x[1000:1120], y[1000:1120]), num_classes=10, probe=train.x[:64],
                    test=Split(x[1200:1320], y[1200:1320]))


@pytest.fixture(scope="session")
def tiny_space() -> SearchSpace:
    return make_space("channel_ratio", {"base_widths": [2, 2, 4, 4, 4, 4]}, (1, 8, 8), 10)


@pytest.fixture(scope="session")
def tiny_spec() -> TrainSpec:
    return TrainSpec(epochs=3, batch_size=32, lr=0.05)
