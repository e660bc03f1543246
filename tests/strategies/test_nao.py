"""Neural Architecture Optimization (``nao``) on the cell space with the
synthetic evaluator of test_rl_pnas.py (reward = the fraction of encoded
positions holding a target genotype's token). The contract tests of every
multi-trial strategy (tests/strategies/test_multi_trial.py) cover validity,
seeding and resume on every space nao supports."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nas_core.strategies import StrategyError
from nas_core.strategies.multi_trial import Trial
from nas_core.strategies.rl import one_thread
from tests.strategies.test_multi_trial import build
from tests.strategies.test_rl_pnas import signals, target_evaluator


def scored(space, genotypes, target):
    return [Trial(i, g, {"score": float(np.mean(space.encode(g) == target))}, {}, 0.0, 0.0)
            for i, g in enumerate(genotypes)]


@pytest.fixture(scope="module")
def trained():
    """nao's model trained for 300 epochs on 24 random cells and their synthetic scores."""
    strategy, rng = build("nao", "cell", train_epochs=300), np.random.default_rng(0)
    target = strategy.space.encode(strategy.space.random(rng))
    trials = scored(strategy.space, [strategy.space.random(rng) for _ in range(24)], target)
    strategy.fit(trials)
    return strategy, trials


def test_the_decoder_reconstructs_at_least_90_percent_of_its_training_genotypes(trained):
    strategy, trials = trained
    measured = strategy.measure(trials)
    assert measured["reconstruction_accuracy"] >= 0.9
    with torch.no_grad(), one_thread():
        rows = strategy.model.greedy(strategy.model.encode(strategy.rows([t.genotype for t in trials])), strategy.mask)
    decoded = [strategy.space.decode(row) for row in rows]
    assert np.mean([d == t.genotype for d, t in zip(decoded, trials)]) >= 0.9


def test_a_gradient_step_in_embedding_space_raises_the_predicted_accuracy(trained):
    strategy, trials = trained
    with one_thread():
        states, grad = strategy.ascent_direction([t.genotype for t in trials])
    with torch.no_grad():
        before, after = strategy.model.predict(states), strategy.model.predict(states + 1.0 * grad)
    assert bool((after > before).all())
    assert float(grad.abs().sum()) > 0


@pytest.mark.slow  # two 32-trial searches with ten model fits each
def test_nao_proposes_new_valid_genotypes_that_beat_random_and_replays_its_learning_signal():
    settings = {"trials": 32, "batch": 4, "seed_trials": 16, "train_epochs": 100}  # params.yaml's training
    strategy = build("nao", "cell", **settings)
    rng = np.random.default_rng(3)
    target = strategy.space.encode(strategy.space.random(rng))
    trials = strategy.search(target_evaluator(strategy.space, target))
    space = strategy.space
    assert len({tuple(space.encode(t.genotype)) for t in trials}) == 32  # every trial is a new genotype
    assert all(space.genotype_from_dict(t.genotype.to_dict()) == t.genotype for t in trials)
    history = strategy.result().history
    assert all("predicted" not in row for row in history[:16])  # the random seed trials
    assert all({"predicted", "predictor_loss", "reconstruction_loss", "reconstruction_accuracy"} <= set(row)
               for row in history[16:])
    assert sum("eta" in row for row in history[16:]) >= 8  # most came from the gradient step
    random_mean = np.mean([t.score for t in scored(space, [space.random(rng) for _ in range(400)], target)])
    assert np.mean([t.score for t in trials[16:]]) > random_mean + 0.03
    replayed = build("nao", "cell", **settings)
    assert replayed.search(lambda requests: pytest.fail("a replayed trial was evaluated again"), trials) == trials
    assert signals(replayed.result().history) == signals(history)


def test_bad_settings_name_the_key():
    with pytest.raises(StrategyError, match=r"strategies\.nao\.trade_off = 1\.5"):
        build("nao", "cell", trade_off=1.5)
    with pytest.raises(StrategyError, match=r"strategies\.nao\.step_size = 0"):
        build("nao", "cell", step_size=0)


def test_a_decode_the_space_rejects_becomes_a_mutation_of_its_seed(monkeypatch):
    strategy, rng = build("nao", "channel_ratio"), np.random.default_rng(0)
    seeds = [strategy.space.random(rng) for _ in range(4)]
    monkeypatch.setattr(strategy.model, "greedy", lambda states, mask: np.full((len(states), 6), 99))  # out of bounds
    with one_thread():
        states, _ = strategy.ascent_direction(seeds)
        decoded = strategy.decoded(states, seeds)
    for genotype, seed in zip(decoded, seeds):
        assert int((strategy.space.encode(genotype) != strategy.space.encode(seed)).sum()) == 1
