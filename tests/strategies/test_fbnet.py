"""FBNet strategy: warm-up, temperature schedule, latency-aware loss,
per-epoch metrics, argmax genotype."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from nas_core.config import PretrainConfig
from nas_core.cost import flops_latency_table
from nas_core.spaces import make_space
from nas_core.strategies import STRATEGIES, SearchData
from nas_core.strategies.fbnet import FBNetStrategy, argmax_genotype, fbnet_loss
from nas_core.train import make_loader
from tests.train.one_thread import one_thread  # noqa: F401

SPACE = make_space("fbnet", "digits", (1, 8, 8), 10)
CONFIG = PretrainConfig(epochs=3, warmup_epochs=1, batch_size=16, theta_lr=0.1)


def tiny_data() -> SearchData:
    g = torch.Generator().manual_seed(0)
    make = lambda n: TensorDataset(torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g))
    return SearchData(make_loader(make(32), 16, True), make_loader(make(16), 16, True),
                      make_loader(make(16), 16, False))


def new_strategy(config: PretrainConfig = CONFIG) -> FBNetStrategy:
    torch.manual_seed(0)
    strategy = STRATEGIES.get("fbnet")(SPACE, config, torch.device("cpu"), 0, latency=flops_latency_table(SPACE))
    strategy.progress = None
    return strategy


class ThetaAtEpochEnd:
    def __init__(self) -> None:
        self.thetas: list[torch.Tensor] = []

    def on_epoch_end(self, strategy, epoch, metrics) -> None:
        self.thetas.append(strategy.net.theta.detach().clone())


@pytest.fixture(scope="module")
def finished():
    strategy, watcher, data = new_strategy(), ThetaAtEpochEnd(), tiny_data()
    result = strategy.run(data, callbacks=[watcher])
    return strategy, watcher, result, data


def test_registered_under_fbnet() -> None:
    assert STRATEGIES.get("fbnet") is FBNetStrategy


def test_warmup_keeps_theta_uniform_then_theta_learns(finished) -> None:
    _, watcher, _, _ = finished
    assert torch.equal(watcher.thetas[0], torch.zeros_like(watcher.thetas[0]))
    assert not torch.equal(watcher.thetas[1], watcher.thetas[0])
    assert not torch.equal(watcher.thetas[2], watcher.thetas[1])


def test_per_epoch_metrics_and_temperature_schedule(finished) -> None:
    _, _, result, _ = finished
    assert len(result.history) == 3
    for row in result.history:
        assert {"loss", "acc", "temperature", "theta_entropy", "expected_latency_ms", "val_acc"} <= set(row)
        assert all(math.isfinite(v) for v in row.values())
    assert "theta_loss" not in result.history[0] and "theta_loss" in result.history[1]
    assert [row["temperature"] for row in result.history] == pytest.approx([5.0, 5.0, 5.0 * 0.956])
    assert result.history[0]["theta_entropy"] == pytest.approx(math.log(9))


def test_argmax_genotype_equals_argmax_of_the_saved_theta(finished) -> None:
    strategy, _, result, data = finished
    saved = strategy.state_dict()
    theta = saved["model"]["theta"]
    assert result.genotype.ops == tuple(SPACE.op_names[i] for i in theta.argmax(1).tolist())
    assert np.array_equal(result.probabilities["layers"].argmax(1), theta.argmax(1).numpy())
    assert result.extras["theta_history"].shape == (3, SPACE.num_layers, SPACE.num_ops)
    # the search stage: a fresh strategy loaded with the last state trains nothing and derives the same
    again = new_strategy()
    derived = again.run(data, state=saved)
    assert derived.genotype == result.genotype and again.epoch == 3
    assert torch.equal(again.net.theta, strategy.net.theta)


def test_fbnet_loss_is_ce_times_alpha_log_latency_to_the_beta() -> None:
    ce, lat = torch.tensor(2.0), torch.tensor(400.0)
    assert float(fbnet_loss(ce, lat, 0.2, 0.6)) == pytest.approx(2.0 * 0.2 * math.log(400.0) ** 0.6)
    assert float(fbnet_loss(ce, torch.tensor(0.5), 0.2, 0.6)) == pytest.approx(2.0 * 0.2)  # clamped at e


def test_latency_term_pushes_theta_away_from_slow_ops() -> None:
    """With the classifier zeroed, CE is constant and theta's gradient comes
    from the latency factor alone: positive (theta falls) for each layer's
    slowest op, negative for its fastest."""
    strategy = new_strategy()
    strategy.setup(tiny_data())
    torch.nn.init.zeros_(strategy.net.head[-1].weight)
    torch.nn.init.zeros_(strategy.net.head[-1].bias)
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))
    loss, _ = strategy.loss_fn(temperature=5.0)(strategy.net, x, y)
    loss.backward()
    grad, table = strategy.net.theta.grad, strategy.latency.ms
    rows = torch.arange(SPACE.num_layers)
    assert (grad[rows, table.argmax(1)] > 0).all() and (grad[rows, table.argmin(1)] < 0).all()


def test_argmax_genotype_helper() -> None:
    theta = torch.zeros(SPACE.num_layers, SPACE.num_ops)
    theta[:, 8] = 1.0
    theta[0, 2] = 3.0
    assert argmax_genotype(SPACE, theta).ops == ("k3_e3",) + ("skip",) * 5
