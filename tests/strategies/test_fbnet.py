"""FBNet strategy: warm-up, temperature schedule, latency-aware loss,
per-epoch metrics, argmax genotype, tables, arrays and figures."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from nas_core.spaces import make_space
from nas_core.spaces.layerwise import flops_latency_table
from nas_core.strategies import STRATEGIES, SearchData, StrategyError, create_strategy
from nas_core.strategies.fbnet import DistributedFBNet, FBNetConfig, FBNetStrategy, argmax_genotype, fbnet_loss
from nas_core.train import make_loader
from tests.train.one_thread import one_thread  # noqa: F401

BASE = make_space("layerwise", {"preset": "digits"}, (1, 8, 8), 10)
SPACE = BASE.with_latency(flops_latency_table(BASE))
CONFIG = {"epochs": 3, "warmup_epochs": 1, "batch_size": 16, "theta_lr": 0.1}


def tiny_datasets() -> tuple[TensorDataset, TensorDataset, TensorDataset]:
    g = torch.Generator().manual_seed(0)
    def make(n: int) -> TensorDataset:
        return TensorDataset(torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g))

    return make(32), make(16), make(16)


def tiny_data() -> SearchData:
    train_w, train_a, val = tiny_datasets()
    return SearchData(make_loader(train_w, 16, True), make_loader(train_a, 16, True), make_loader(val, 16, False))


def new_strategy(config: dict = CONFIG, space=SPACE) -> FBNetStrategy:
    torch.manual_seed(0)
    strategy = create_strategy("fbnet", space, config, "cpu", seed=0)
    strategy.progress = None
    return strategy


class ThetaAtEpochEnd:
    def __init__(self) -> None:
        self.thetas: list[torch.Tensor] = []

    def on_epoch_end(self, strategy, epoch, metrics) -> None:
        self.thetas.append(strategy.supernet.theta.detach().clone())


@pytest.fixture(scope="module")
def finished():
    strategy, watcher, data = new_strategy(), ThetaAtEpochEnd(), tiny_data()
    result = strategy.run(data, callbacks=[watcher])
    return strategy, watcher, result, data


def test_registered_with_papers_defaults() -> None:
    assert STRATEGIES.get("fbnet") is FBNetStrategy and FBNetStrategy.spaces == ("layerwise",)
    assert FBNetStrategy.kind == "one_shot" and FBNetStrategy.data_parallel() is DistributedFBNet
    c = FBNetConfig()
    assert (c.epochs, c.warmup_epochs, c.theta_lr, c.theta_weight_decay) == (90, 10, 0.01, 5e-4)
    assert (c.temperature, c.temperature_decay, c.alpha, c.beta, c.w_lr) == (5.0, 0.956, 0.2, 0.6, 0.1)
    assert type(new_strategy()) is FBNetStrategy  # one process: not the DDP variant


def test_warmup_must_end_before_the_last_epoch() -> None:
    with pytest.raises(StrategyError, match=r"strategies\.fbnet\.warmup_epochs = 3: must be less than"):
        create_strategy("fbnet", SPACE, {"epochs": 3, "warmup_epochs": 3})
    with pytest.raises(StrategyError, match="theta_batch_size"):
        create_strategy("fbnet", SPACE, {"theta_batch_size": 8})


def test_one_epoch_through_create_strategy_with_its_own_search_data() -> None:
    strategy = new_strategy({"epochs": 1, "warmup_epochs": 0, "batch_size": 16, "arch_batch_size": 8})
    data = strategy.search_data(*tiny_datasets())
    assert data.train_a.batch_size == 8 and data.train_w.batch_size == 16
    result = strategy.run(data)
    metrics = result.history[0]
    assert {"loss", "acc", "temperature", "theta_loss", "val_acc", "expected_latency_ms"} <= set(metrics)
    assert strategy.progress_postfix(metrics).keys() == {"loss", "acc", "tau"}
    assert SPACE.genotype_from_dict(result.genotype.to_dict()) == result.genotype


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
    theta = saved["supernet"]["theta"]
    assert result.genotype.ops == tuple(SPACE.op_names[i] for i in theta.argmax(1).tolist())
    probs = result.tables["layers"]
    assert probs.dtype == np.float64 and np.allclose(probs.sum(1), 1)
    assert np.array_equal(probs.argmax(1), theta.argmax(1).numpy())
    assert result.extras["latency_ms"] == pytest.approx(SPACE.cost(result.genotype)["latency_ms"])
    assert strategy.arrays()["theta_history"].shape == (3, SPACE.num_layers, SPACE.num_ops)
    # the search stage: a fresh strategy loaded with the last state trains nothing and derives the same
    again = new_strategy()
    derived = again.run(data, state=saved)
    assert derived.genotype == result.genotype and again.epoch == 3
    assert torch.equal(again.supernet.theta, strategy.supernet.theta)
    assert torch.equal(again.load_supernet(saved).theta, theta)


def test_figures_are_the_table_heatmap_and_theta_over_epochs(finished) -> None:
    import matplotlib.pyplot as plt

    strategy, _, result, _ = finished
    figures = strategy.figures(result)
    assert set(figures) == {"tables.png", "theta_heatmap.png"}
    for fig in figures.values():
        plt.close(fig)


def test_latency_is_measured_in_setup_when_the_space_has_none() -> None:
    strategy = new_strategy({"epochs": 2, "warmup_epochs": 1},
                            space=make_space("layerwise", {"latency_repeats": 1}, (1, 8, 8), 10))
    strategy.setup(None)
    assert strategy.latency is not None and strategy.latency.device == "cpu"


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
    torch.nn.init.zeros_(strategy.supernet.head[-1].weight)
    torch.nn.init.zeros_(strategy.supernet.head[-1].bias)
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))
    loss, _ = strategy.loss_fn(temperature=5.0)(strategy.supernet, x, y)
    loss.backward()
    grad, table = strategy.supernet.theta.grad, strategy.latency.ms
    rows = torch.arange(SPACE.num_layers)
    assert (grad[rows, table.argmax(1)] > 0).all() and (grad[rows, table.argmin(1)] < 0).all()


def test_argmax_genotype_helper() -> None:
    theta = torch.zeros(SPACE.num_layers, SPACE.num_ops)
    theta[:, 8] = 1.0
    theta[0, 2] = 3.0
    assert argmax_genotype(SPACE, theta).ops == ("k3_e3",) + ("skip",) * 5
