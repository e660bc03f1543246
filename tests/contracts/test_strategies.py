"""The strategy contract, run on every (one-shot strategy, space it
supports) pair of the registries: a strategy is tested the moment it is
registered. Settings: the strategy's params.yaml section (the digits scale)
cut to 2 epochs (per stage), on 8x8 digits."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch.utils.data import TensorDataset

from nas_core.config import load_params
from nas_core.dcnas.cluster import cluster_features
from nas_core.dcnas.features import extract_output_features, extract_param_features
from nas_core.dcnas.select import top_per_cluster
from nas_core.io import load_tensors, save_tensors
from nas_core.runtime import seed_everything
from nas_core.spaces import make_space
from nas_core.strategies import STRATEGIES, OneShotStrategy, StrategyError, create_strategy
from tests.conftest import REPO
from tests.train.one_thread import one_thread  # noqa: F401  (tiny models: one torch thread)

PARAMS = load_params(REPO / "params.yaml")
PAIRS = [(name, space) for name in STRATEGIES.names() if issubclass(STRATEGIES.get(name), OneShotStrategy)
         for space in STRATEGIES.get(name).spaces]


TIMING = ("step_time_s", "peak_rss_mb", "cuda_peak_mb")


def untimed(history):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


class Keep:
    """Keeps each epoch's state through a file, as the pretrain stage's
    checkpoints do (``torch.load(weights_only=True)``)."""

    def __init__(self, directory) -> None:
        self.directory, self.states = directory, []

    def on_epoch_end(self, strategy, epoch, metrics):
        path = self.directory / f"epoch_{epoch:03d}.pt"
        save_tensors(path, strategy.state_dict())
        self.states.append(load_tensors(path))


def tiny_config(name: str) -> dict:
    section = getattr(PARAMS.strategies, name).model_dump()
    section["epochs"] = 2
    if "warmup_epochs" in section:
        section["warmup_epochs"] = min(section["warmup_epochs"], 1)
    return section


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x[:96] / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    y = torch.tensor(y[:96])
    return TensorDataset(x[:40], y[:40]), TensorDataset(x[40:80], y[40:80]), TensorDataset(x[80:], y[80:])


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """Where spaces keep their device-measured tables (FBNet's latency): one
    measurement shared by every run, as the pretrain stage's output is."""
    return tmp_path_factory.mktemp("measurements")


def build(name: str, space_name: str, measured):
    space = make_space(space_name, getattr(PARAMS.spaces, space_name), (1, 8, 8), 10)
    space = space.with_measurements(measured / space_name, torch.device("cpu"), measure=True)
    return create_strategy(name, space, tiny_config(name), "cpu", seed=0)


@pytest.fixture(scope="module", params=PAIRS, ids=[f"{n}-{s}" for n, s in PAIRS])
def trained(request, digits, measured, tmp_path_factory):
    """One uninterrupted run per pair, its per-epoch checkpoints kept."""
    name, space_name = request.param
    keep = Keep(tmp_path_factory.mktemp(f"{name}-states"))
    seed_everything(0)
    strategy = build(name, space_name, measured)
    result = strategy.run(strategy.search_data(*digits), callbacks=[keep])
    return name, space_name, strategy, result, keep.states


def test_an_unsupported_space_is_refused_by_the_factory():
    for name in STRATEGIES.names():
        others = [s for s in ("layerwise", "cell", "channel_ratio") if s not in STRATEGIES.get(name).spaces]
        for other in others:
            with pytest.raises(StrategyError, match="search.space"):
                create_strategy(name, make_space(other, None, (1, 8, 8), 10), tiny_config(name))


def test_training_reports_finite_metrics_and_tables_the_space_reads(trained):
    name, space_name, strategy, result, states = trained
    assert len(result.history) == strategy.num_epochs() == len(states)
    assert all(np.isfinite(v) for row in result.history for v in row.values())
    space = strategy.space
    space.genotype_from_dict(result.genotype.to_dict())
    assert all(np.isfinite(t).all() and (t >= 0).all() for t in result.tables.values())  # probabilities
    draws = space.sample(result.tables, 20, seed=0)
    assert np.isfinite(space.score(draws.archs, result.tables)).all()


def test_resume_from_a_checkpoint_is_bit_identical(trained, digits, measured):
    """A run killed after epoch 1 restarts from that epoch's checkpoint
    (read back from its file) and ends where the uninterrupted run ended."""
    name, space_name, _, result, states = trained
    resumed = build(name, space_name, measured)
    again = resumed.run(resumed.search_data(*digits), state=states[0])
    assert untimed(again.history) == untimed(result.history)
    assert again.genotype == result.genotype
    for key, table in result.tables.items():
        np.testing.assert_array_equal(again.tables[key], table)
    final = states[-1]["supernet"]
    for key, value in resumed.state_dict()["supernet"].items():
        assert torch.equal(value, final[key]), key


def test_dc_nas_chain_runs_on_the_supernet(trained, digits, measured):
    """What the DC-NAS stages do: rebuild from the last checkpoint, sample
    from the tables, Eq. 7 and Eq. 6 features over the checkpoints of the
    final supernet, k-means, Eq. 9 representatives, their networks."""
    name, space_name, _, result, states = trained
    strategy = build(name, space_name, measured)
    strategy.setup(None)
    strategy.load_state_dict(states[-1])
    same = [s for s in states if strategy.supernet_key(s) == strategy.supernet_key(states[-1])]
    assert len(same) >= 2
    space = strategy.space
    draws = space.sample(result.tables, 20, seed=0)
    probe = [digits[2].tensors[0]]
    features = extract_output_features((strategy.load_supernet(s) for s in same), draws.archs, probe,
                                       torch.device("cpu"))
    depth = strategy.supernet.path_depth()
    assert features.shape == (draws.num_unique, depth, len(same)) and np.isfinite(features).all()
    assert np.allclose(features[:, :, 0], 1.0)  # column 0 compares epoch 1 with itself
    params = extract_param_features((strategy.load_supernet(s) for s in same), draws.archs)
    assert params.shape == features.shape and np.isfinite(params).all()
    k = min(2, draws.num_unique)
    clusters = cluster_features(features, k, seed=0, weights=draws.counts)
    reps = top_per_cluster(clusters.labels, space.score(draws.archs, result.tables), 1)[:, 0]
    for row in draws.archs[reps]:
        net = space.build_network(space.decode(row)).eval()
        with torch.no_grad():
            assert net(digits[2].tensors[0][:2]).shape == (2, 10)
