"""The NASNet RL controller (``rl``) and progressive NAS (``pnas``) on a
synthetic evaluator with a known optimum: reward = the fraction of encoded
positions holding a target genotype's token. (The contract tests of every
multi-trial strategy, tests/strategies/test_multi_trial.py, cover validity,
seeding and resume for both.)"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import kendalltau

from nas_core.spaces.base import GenotypeError
from nas_core.spaces.cell.sampling import HALF_WIDTH
from nas_core.strategies import StrategyError, create_strategy
from nas_core.strategies.multi_trial import Trial
from tests.strategies.test_multi_trial import build, space_for


def target_evaluator(space, target):
    def evaluate(requests):
        return [{"metrics": {"score": float(np.mean(space.encode(r.genotype) == target))}, "cost": {},
                 "seconds": 0.0} for r in requests]
    return evaluate


def round_means(trials, batch):
    return np.array([t.score for t in trials]).reshape(-1, batch).mean(axis=1)


def test_rl_raises_the_mean_reward_of_its_samples_and_logs_its_learning_signal():
    strategy = build("rl", "cell", trials=60, batch=6)
    target = strategy.space.encode(strategy.space.random(np.random.default_rng(7)))
    trials = strategy.search(target_evaluator(strategy.space, target))
    means = round_means(trials, 6)
    assert means[-2:].mean() > means[:2].mean() + 0.1  # 10 policy updates
    history = strategy.result().history
    assert [row["reward"] for row in history] == [t.score for t in trials]
    assert history[0]["baseline"] == pytest.approx(means[0])  # starts at the first round's mean
    assert history[-1]["entropy"] < history[0]["entropy"]  # the policy sharpens
    again = build("rl", "cell", trials=60, batch=6)
    assert [t.genotype for t in again.search(target_evaluator(again.space, target))] == [t.genotype for t in trials]
    assert signals(again.result().history) == signals(history)


def signals(history):
    return [{k: v for k, v in row.items() if k != "elapsed_s"} for row in history]


def test_rl_draws_again_a_child_the_space_rejects(monkeypatch):
    space_class = type(space_for("channel_ratio"))
    decode = space_class.decode

    def picky(self, row):
        if int(np.asarray(row)[0]) == 0:
            raise GenotypeError("entry 0 must not be 0")
        return decode(self, row)

    monkeypatch.setattr(space_class, "decode", picky)
    strategy = build("rl", "channel_ratio", trials=12, batch=3)
    trials = strategy.search(target_evaluator(strategy.space, np.zeros(strategy.space.encoding_length)))
    assert all(strategy.space.encode(t.genotype)[0] != 0 for t in trials)
    monkeypatch.setattr(space_class, "decode", lambda self, row: picky(self, np.zeros_like(row)))
    with pytest.raises(StrategyError, match=r"strategies\.rl\.max_resamples = 5"):
        build("rl", "channel_ratio", max_resamples=5).propose(1)


def tied_cell(strategy, rng):
    """A random cell that is its own reduction cell (PNAS's cells)."""
    return strategy.genotype(strategy.space.encode(strategy.space.random(rng))[:HALF_WIDTH])


def test_pnas_surrogate_ranks_held_out_cells_with_kendall_tau_above_half():
    strategy, rng = build("pnas", "cell"), np.random.default_rng(0)
    target = strategy.space.encode(tied_cell(strategy, rng))
    cells = [tied_cell(strategy, rng) for _ in range(104)]
    trials = [Trial(i, g, {"score": float(np.mean(strategy.space.encode(g) == target))}, {}, 0.0, 0.0)
              for i, g in enumerate(cells)]
    surrogate = strategy.fit_surrogate(trials[:64], seed=0)
    held_out = trials[64:]
    predicted = surrogate.predict(np.stack([strategy.space.encode(t.genotype) for t in held_out]))
    assert kendalltau(predicted, [t.score for t in held_out]).statistic > 0.5


def searched_blocks(strategy, genotype):
    """The number of nodes that are not PNAS's filler block."""
    half = strategy.space.encode(genotype)[:HALF_WIDTH].reshape(-1, 4)
    return int(sum((row != strategy.filler()[:4]).any() for row in half))


def test_pnas_grows_cells_block_by_block_from_the_trained_ones():
    strategy = build("pnas", "cell", trials=20, batch=2, first_level=8, beam=4, blocks=4)
    target = strategy.space.encode(strategy.space.decode(np.array([0, 4, 1, 5, 1, 4, 2, 6, 0, 5, 3, 4, 2, 7, 4, 4]
                                                                  * 2)))
    trials = strategy.search(target_evaluator(strategy.space, target))
    history = strategy.result().history
    levels = [int(row["level"]) for row in history]
    assert levels == [1] * 8 + [2] * 4 + [3] * 4 + [4] * 4
    halves = [tuple(strategy.space.encode(t.genotype)[:HALF_WIDTH]) for t in trials]
    assert all(h == tuple(strategy.space.encode(t.genotype)[HALF_WIDTH:]) for h, t in zip(halves, trials))
    for t, level, half in zip(trials, levels, halves):
        assert searched_blocks(strategy, t.genotype) == level
        if level > 1:  # the parent is a cell trained at the level before
            parent = half[:4 * (level - 1)] + tuple(strategy.filler()[4 * (level - 1):])
            assert parent in {h for h, lv in zip(halves, levels) if lv == level - 1}
    assert all("predicted" in row and "surrogate_tau" in row for row in history[8:])
    assert max(t.score for t in trials[8:]) > max(t.score for t in trials[:8])
    one_block = build("pnas", "cell", trials=16, batch=2, first_level=8, beam=4, blocks=1)
    rest = one_block.search(target_evaluator(one_block.space, target))[8:]  # B = 1: more one-block cells, ranked
    assert all(searched_blocks(one_block, t.genotype) == 1 for t in rest)
    assert len({t.genotype for t in rest}) == 8 and all("predicted" in r for r in one_block.result().history[8:])


def test_bad_settings_name_the_key():
    with pytest.raises(StrategyError, match=r"strategies\.rl\.lr = 0"):
        build("rl", "cell", lr=0)
    with pytest.raises(StrategyError, match=r"strategies\.rl\.baseline_decay = 1"):
        build("rl", "cell", baseline_decay=1)
    with pytest.raises(StrategyError, match=r"strategies\.pnas\.blocks = 5"):
        build("pnas", "cell", blocks=5)
    with pytest.raises(StrategyError, match=r"strategies\.pnas\.beam = 0"):
        build("pnas", "cell", beam=0)
    with pytest.raises(StrategyError, match=r"search\.space = 'layerwise'.*pnas.*cell"):
        create_strategy("pnas", space_for("layerwise"), None)
