"""Plain train/evaluate loops; a genotype's child network trains."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from nas_core.spaces import make_space
from nas_core.train import evaluate, make_loader, reseed, train_one_epoch
from nas_core.train.loop import NonFiniteLossError


@pytest.fixture
def batch() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(32, 1, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g))


def test_a_child_network_from_a_genotype_trains(batch: TensorDataset) -> None:
    torch.manual_seed(0)
    space = make_space("layerwise", {"preset": "digits"}, (1, 8, 8), 10)
    genotype = {"space": "layerwise", "preset": "digits",
                "ops": ["k3_e3", "k5_e1_g2", "skip", "k3_e6", "k5_e3", "k3_e1"]}
    net = space.build_network(space.genotype_from_dict(genotype))
    loader = make_loader(batch, 32, shuffle=False)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    losses = [train_one_epoch(net, loader, opt, torch.device("cpu"), epoch) for epoch in range(15)]
    assert losses[-1]["loss"] < 0.5 * losses[0]["loss"] and losses[-1]["acc"] > 0.5
    evaluated = evaluate(net, loader, torch.device("cpu"))  # eval mode: BN running statistics
    assert set(evaluated) == {"loss", "acc"} and 0.0 <= evaluated["acc"] <= 1.0


def test_nan_loss_names_epoch_and_step(batch: TensorDataset) -> None:
    x, y = batch.tensors
    x = x.clone()
    x[20] = float("nan")
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(NonFiniteLossError, match="at epoch 5, step 3"):
        train_one_epoch(net, make_loader(TensorDataset(x, y), 8, shuffle=False), opt, torch.device("cpu"), epoch=4)


def test_reseed_fixes_the_order_without_the_global_rng(batch: TensorDataset) -> None:
    loader = make_loader(TensorDataset(torch.arange(32)), 4, shuffle=True)
    reseed(loader, 7)
    first = torch.cat([b[0] for b in loader])
    torch.manual_seed(123)
    reseed(loader, 7)
    assert torch.equal(first, torch.cat([b[0] for b in loader]))
    reseed(loader, 8)
    assert not torch.equal(first, torch.cat([b[0] for b in loader]))
