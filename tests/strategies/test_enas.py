"""ENAS (``enas``) on a tiny proxy network and real 8x8 digits: the search
returns the best of its sampled children, trains one path per batch, its
controller learns a reward it is given, its tables are the controller's
marginals, and bad settings are named. (The strategy contract,
tests/contracts/test_strategies.py, runs enas too: per-epoch checkpoints
through files, bit-identical resume, the DC-NAS chain on its supernet.)"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from darts_helpers import digits_data, tiny_space

from nas_core.io import load_tensors, save_tensors
from nas_core.spaces.cell.genotype import KINDS, NODES, ZERO, node_edges
from nas_core.strategies import StrategyError, create_strategy
from nas_core.strategies.enas import EnasStrategy
from tests.train.one_thread import one_thread  # noqa: F401

TINY = dict(epochs=2, cells=2, init_channels=4, batch_size=16, hidden=16, lr=0.05, baseline_decay=0.8,
            controller_steps=3, controller_batch=3, derive_samples=6, table_samples=400)


def make(seed: int = 0, **overrides) -> EnasStrategy:
    return create_strategy("enas", tiny_space(), {**TINY, **overrides}, "cpu", seed)


class Keep:
    """Each epoch's state through a file, as the pretrain stage keeps them."""

    def __init__(self, directory) -> None:
        self.directory, self.states = directory, []

    def on_epoch_end(self, strategy, epoch, metrics):
        save_tensors(self.directory / f"epoch_{epoch}.pt", strategy.state_dict())
        self.states.append(load_tensors(self.directory / f"epoch_{epoch}.pt"))


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    strategy = make()
    keep = Keep(tmp_path_factory.mktemp("enas"))
    result = strategy.run(digits_data(), callbacks=[keep])
    return strategy, result, keep.states


def test_the_result_is_the_best_sampled_child_and_the_learning_signal_is_logged(searched):
    strategy, result, states = searched
    space = strategy.space
    assert space.genotype_from_dict(result.genotype.to_dict()) == result.genotype
    assert np.array_equal(space.encode(result.genotype), strategy.best_row)
    for row in result.history:
        assert {"loss", "acc", "reward", "baseline", "entropy", "val_acc"} <= set(row)
        assert 0.0 <= row["reward"] <= 1.0 and row["entropy"] > 0
    last = result.history[-1]
    assert 1 <= last["derive_distinct"] <= TINY["derive_samples"] and "derive_reward" not in result.history[0]
    # the search stage: rebuild, load the final checkpoint, derive -> the same genotype and tables
    again = make()
    again.setup(None)
    assert again.best_row is None and again.derive().genotype == again.space.decode(again.greedy_row())
    again.load_state_dict(states[-1])
    rebuilt = again.derive()
    assert rebuilt.genotype == result.genotype
    for key, table in result.tables.items():
        np.testing.assert_array_equal(rebuilt.tables[key], table)


def test_a_child_draws_valid_rows_and_derive_keeps_the_best_scoring_one(monkeypatch):
    strategy = make(derive_samples=40)
    strategy.setup(None)
    rows = strategy.sample_rows(50)
    for row in rows:
        strategy.space.decode(row)  # masked: every draw is a genotype
    monkeypatch.setattr(EnasStrategy, "rewards", lambda self, rows, x, y: rows[:, 1::2].sum(axis=1) / 1000.0)
    x, y = torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long)
    torch.manual_seed(3)
    drawn = strategy.sample_rows(40)
    torch.manual_seed(3)
    info = strategy._select((x, y))
    assert info["derive_reward"] == pytest.approx(drawn[:, 1::2].sum(axis=1).max() / 1000.0)
    assert strategy.genotype() == strategy.space.decode(strategy.best_row)


def test_shared_weight_step_trains_only_the_sampled_path_and_rewards_change_nothing():
    strategy = make()
    data = digits_data()
    strategy.setup(data)
    x, y = next(iter(data.train_w))
    before = {k: v.clone() for k, v in strategy.supernet.state_dict().items()}
    strategy.rewards(strategy.sample_rows(3), x, y)
    after = strategy.supernet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm running statistics too
    strategy.child = strategy.sample_rows(1)[0]
    used = {name for depth in range(strategy.supernet.path_depth())
            for name in strategy.supernet.path_parameter_names(depth, strategy.child)}
    strategy._weight_step(x, y)
    params = dict(strategy.supernet.named_parameters())
    op_params = [n for n in params if ".edges." in n]
    moved = {n for n in op_params if not torch.equal(params[n].detach(), before[n])}
    assert moved and moved <= used
    assert all(n in moved for n in used if ".edges." in n)


def test_the_controller_moves_toward_the_op_its_reward_favours(monkeypatch):
    """Reward = the fraction of a child's op positions holding sep_conv_3x3."""
    strategy = make(epochs=4, controller_steps=4, controller_batch=6)
    target = strategy.space.op_names.index("sep_conv_3x3")
    monkeypatch.setattr(EnasStrategy, "rewards", lambda self, rows, x, y: np.mean(rows[:, 1::2] == target, axis=1))
    result = strategy.run(digits_data())
    rewards = [row["reward"] for row in result.history]
    assert rewards[-1] > rewards[0] + 0.1  # 16 controller updates; uniform start: 1/7 of the positions
    assert np.mean(strategy.space.encode(result.genotype)[1::2] == target) > 0.4
    assert result.history[-1]["entropy"] < result.history[0]["entropy"]
    assert np.mean([result.tables[kind][:, target].mean() for kind in KINDS]) > 0.3  # tables follow it


def test_tables_are_seeded_controller_marginals_the_space_samples_from(searched):
    strategy, result, _ = searched
    state = torch.get_rng_state()
    tables = strategy.tables()
    assert torch.equal(torch.get_rng_state(), state)  # the search's RNG is untouched
    zero = strategy.space.op_names.index(ZERO)
    for kind in KINDS:
        np.testing.assert_array_equal(tables[kind], result.tables[kind])
        np.testing.assert_allclose(tables[kind].sum(axis=1), 1.0)
        assert (tables[kind][:, zero] == 0).all()
        edges = tables[f"edges_{kind}"]
        for node in NODES:  # every child keeps two inputs per node
            assert edges[list(node_edges(node))].sum() == pytest.approx(2.0)
    draws = strategy.space.sample(tables, 50, seed=0)
    assert np.isfinite(strategy.space.score(draws.archs, tables)).all()


@pytest.mark.parametrize("settings,key", [
    ({"controller_batch": 0}, "strategies.enas.controller_batch"),
    ({"w_lr": 0.01, "w_lr_min": 0.1}, "strategies.enas.w_lr_min"),
    ({"w_momentum": 0.0}, "strategies.enas.w_nesterov"),
    ({"baseline_decay": 1.0}, "strategies.enas.baseline_decay"),
    ({"temperature": 0}, "strategies.enas.temperature"),
])
def test_bad_settings_name_the_key(settings, key):
    with pytest.raises(StrategyError, match=key.replace(".", r"\.")):
        make(**settings)


def test_no_data_parallel_variant():
    with pytest.raises(StrategyError, match="enas"):
        EnasStrategy.data_parallel()
