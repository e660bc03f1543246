"""Multi-trial strategies against a synthetic evaluator (no training): every
registered multi-trial strategy on every space it supports returns a valid
genotype, is a function of its seed, resumes from recorded trials without
re-evaluating them, and rejects bad settings naming the key."""
from __future__ import annotations

import numpy as np
import pytest

from nas_core.config import load_params
from nas_core.spaces import SPACES, make_space
from nas_core.strategies import STRATEGIES, StrategyError, create_strategy
from nas_core.strategies.multi_trial import MultiTrialStrategy, TrialRequest
from nas_core.strategies.trial_table import pareto_mask, read_trials, write_trials
from tests.conftest import REPO

PARAMS = load_params(REPO / "params.yaml")
MULTI = [n for n in STRATEGIES.names() if issubclass(STRATEGIES.get(n), MultiTrialStrategy)]
PAIRS = [(n, s) for n in MULTI for s in STRATEGIES.get(n).spaces if s in SPACES]


def space_for(name: str):
    return make_space(name, getattr(PARAMS.spaces, name), (1, 8, 8), 10)


# The contract holds at any amount of model training: cut it to keep the suite fast.
TINY = {"nao": {"train_epochs": 10}}


def build(name: str, space_name: str, seed: int = 0, **settings):
    section = {**getattr(PARAMS.strategies, name).model_dump(), "supernet": "none", **TINY.get(name, {}),
               **settings}
    return create_strategy(name, space_for(space_name), section, "cpu", seed)


def synthetic(requests: list[TrialRequest]) -> list[dict]:
    """Score = the mean of the genotype's normalised tokens (a fixed
    landscape with a known optimum); cost = a token sum."""
    out = []
    for r in requests:
        space = SYNTHETIC_SPACE[0]
        tokens = space.encode(r.genotype).astype(float)
        top = np.maximum(space.encoding_bounds().astype(float), 1.0)
        out.append({"metrics": {"score": float(np.mean(tokens / top))}, "cost": {"flops": float(tokens.sum())},
                    "seconds": 0.0})
    return out


SYNTHETIC_SPACE: list = []


def run(strategy, recorded=(), on_round=None):
    SYNTHETIC_SPACE[:] = [strategy.space]
    return strategy.search(synthetic, recorded, on_round)


def table(trials):
    return [(t.index, t.genotype, t.score) for t in trials]


@pytest.mark.parametrize("name,space_name", PAIRS, ids=[f"{n}-{s}" for n, s in PAIRS])
def test_every_multi_trial_strategy_returns_a_valid_best_genotype_and_is_seeded(name, space_name):
    strategy = build(name, space_name, trials=12, batch=3)
    trials = run(strategy)
    assert [t.index for t in trials] == list(range(12))
    best = strategy.result().genotype
    space = strategy.space
    assert space.genotype_from_dict(best.to_dict()) == best
    assert strategy.best().score == max(t.score for t in trials)
    assert table(run(build(name, space_name, trials=12, batch=3))) == table(trials)
    assert table(run(build(name, space_name, seed=1, trials=12, batch=3))) != table(trials)


@pytest.mark.parametrize("name,space_name", PAIRS, ids=[f"{n}-{s}" for n, s in PAIRS])
def test_a_killed_search_resumes_from_its_recorded_rounds_without_reevaluating(name, space_name, tmp_path):
    whole = run(build(name, space_name, trials=10, batch=2))
    path, recorded_rounds = tmp_path / "trials.jsonl", []

    def record(strategy):
        def on_round(trials):
            recorded_rounds.append(len(trials))
            write_trials(path, strategy.trials, strategy.space, "key")
            if len(recorded_rounds) == 3:
                raise KeyboardInterrupt  # the kill
        return on_round

    first = build(name, space_name, trials=10, batch=2)
    with pytest.raises(KeyboardInterrupt):
        run(first, on_round=record(first))
    recorded = read_trials(path, first.space, "key")
    assert len(recorded) == 6 and read_trials(path, first.space, "another search") == []
    evaluated: list[int] = []
    second = build(name, space_name, trials=10, batch=2)
    SYNTHETIC_SPACE[:] = [second.space]
    resumed = second.search(lambda rs: evaluated.extend(r.index for r in rs) or synthetic(rs), recorded)
    assert evaluated == list(range(6, 10))
    assert table(resumed) == table(whole)


def test_aging_evolution_keeps_the_newest_population_and_beats_its_random_start():
    strategy = build("evolution", "channel_ratio", trials=60, batch=2, population=8, sample=3)
    trials = run(strategy)
    assert [t.index for t in strategy.population] == list(range(52, 60))  # the oldest were removed
    start = max(t.score for t in trials[:8])
    assert strategy.best().score > start  # the synthetic optimum is the largest tokens


def test_bad_settings_name_the_key():
    with pytest.raises(StrategyError, match=r"strategies\.random\.trials = 0"):
        build("random", "channel_ratio", trials=0)
    with pytest.raises(StrategyError, match=r"strategies\.random\.evaluator = 'trian'.*train"):
        build("random", "channel_ratio", evaluator="trian")
    with pytest.raises(StrategyError, match=r"search\.space = 'layerwise'.*hier_evolution"):
        create_strategy("hier_evolution", space_for("layerwise"), None)
    with pytest.raises(StrategyError, match=r"strategies\.evolution\.sample"):
        build("evolution", "channel_ratio", population=4, sample=5)
    with pytest.raises(StrategyError, match=r"strategies\.random\.evaluator = 'supernet': needs a supernet"):
        build("random", "channel_ratio", evaluator="supernet", supernet="auto")


def test_supernet_auto_is_the_first_one_shot_strategy_on_the_space():
    assert build("random", "layerwise", supernet="auto").supernet_name() == "fbnet"
    assert build("random", "cell", supernet="auto").supernet_name() == "darts"
    assert build("random", "channel_ratio", supernet="auto").supernet_name() is None
    with pytest.raises(StrategyError, match=r"strategies\.random\.supernet = 'fbnet'.*darts"):
        build("random", "cell", supernet="fbnet")


def test_pareto_mask_marks_the_non_dominated_trials():
    score = np.array([0.9, 0.8, 0.95, 0.7, 0.9])
    flops = np.array([10.0, 5.0, 20.0, 6.0, 12.0])
    assert pareto_mask(score, flops).tolist() == [True, True, True, False, False]
