"""A space's training recipe in fit (DARTS's evaluation recipe on the cell
space): cutout, the auxiliary head's loss, the drop-path ramp, gradient
clipping."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from nas_core.spaces import make_space
from nas_core.train.fit import Cutout, FitSettings, fit
from tests.train.one_thread import one_thread  # noqa: F401

CELL = {"final_cells": 3, "final_channels": 4}


def data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g))


def test_cutout_zeroes_one_square_clipped_at_the_border():
    torch.manual_seed(3)
    out = Cutout(4)(torch.ones(1, 8, 8))
    zero = (out[0] == 0).nonzero()
    rows, cols = zero[:, 0], zero[:, 1]
    assert 1 <= len(zero) <= 16 and len(zero) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert (out[0] == 0).sum() + (out[0] == 1).sum() == 64


def test_cell_network_has_an_auxiliary_head_for_training_only():
    space = make_space("cell", {**CELL, "auxiliary_weight": 0.4}, (1, 8, 8), 10)
    genotype = space.random(np.random.default_rng(0))
    net = space.build_network(genotype)
    logits, auxiliary = net.train()(torch.randn(2, 1, 8, 8))
    assert logits.shape == auxiliary.shape == (2, 10)
    assert net.train()(torch.randn(1, 1, 8, 8)).shape == (1, 10)  # a batch of one: no auxiliary output
    assert net.eval()(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    plain = make_space("cell", {**CELL, "auxiliary_weight": 0.0}, (1, 8, 8), 10)
    assert not hasattr(plain.build_network(genotype), "auxiliary")
    assert space.cost(genotype) == plain.cost(genotype)  # the head trains only: not in the cost


def test_the_auxiliary_loss_is_added_with_its_weight():
    space = make_space("cell", {**CELL, "auxiliary_weight": 0.4}, (1, 8, 8), 10)
    genotype = space.random(np.random.default_rng(1))
    losses = {}
    for weight in (0.0, 0.4):
        torch.manual_seed(0)
        net = space.build_network(genotype)
        settings = FitSettings(epochs=1, batch_size=64, aux_weight=weight)
        result = fit(net, data(), data(32, 1), settings, torch.device("cpu"))
        losses[weight] = result.history[0]["train_loss"]
    assert losses[0.4] > losses[0.0]  # the same first step, plus 0.4 x a positive cross entropy


class Recorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)
        self.drop_path: list[float] = []

    def set_drop_path(self, p: float) -> None:
        self.drop_path.append(p)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_drop_path_ramps_up_linearly_from_zero():
    model = Recorder()
    fit(model, data(), data(16), FitSettings(epochs=4, drop_path=0.2), torch.device("cpu"))
    assert model.drop_path == pytest.approx([0.0, 0.05, 0.1, 0.15])
    with pytest.raises(ValueError, match="set_drop_path"):
        fit(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), data(), data(16), FitSettings(epochs=1, drop_path=0.2),
            torch.device("cpu"))


def test_gradient_clipping_bounds_each_step():
    moved = {}
    for clip in (None, 1e-6):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        before = model[1].weight.detach().clone()
        settings = FitSettings(epochs=1, batch_size=64, lr=0.5, momentum=0.0, weight_decay=0.0, grad_clip=clip)
        fit(model, data(), data(16), settings, torch.device("cpu"))
        moved[clip] = float((model[1].weight.detach() - before).norm())
    assert moved[1e-6] < 1e-5 < moved[None]
