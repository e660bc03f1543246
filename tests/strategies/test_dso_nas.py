"""DSO-NAS (nas_core/strategies/dso_nas.py): the soft-threshold and one
APG-NAG step against hand-computed values, γ = 0 against a large γ, the
budgets, resume in the middle of the search, and the config errors. The
contract (training, resume from pre-training, DC-NAS chain) is in
tests/contracts/test_strategies.py."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch.utils.data import TensorDataset

from nas_core.io import load_tensors, save_tensors
from nas_core.spaces import make_space
from nas_core.spaces.dso.latency import DSOLatencyTable
from nas_core.strategies import StrategyError, create_strategy
from nas_core.strategies.dso_nas import (
    APGNAG,
    apg_momentum,
    apg_nag_update,
    budget_gamma,
    latency_gamma,
    soft_threshold,
)
from tests.train.one_thread import one_thread  # noqa: F401

SPACE = {"levels": 2, "stages": 2, "blocks_per_stage": 1, "init_channels": 4}
TINY = {"epochs": 2, "warmup_epochs": 1, "batch_size": 16, "w_lr": 0.05, "gamma": 0.0, "budget": "fixed"}


def test_soft_threshold_by_hand():
    z = torch.tensor([-0.5, 0.05, 0.3])
    torch.testing.assert_close(soft_threshold(z, 0.1), torch.tensor([-0.4, 0.0, 0.2]))


def test_one_apg_nag_step_by_hand():
    """λ' = (1, 0.5, 0.02), ∇ = (0.2, -0.1, 0.05), v = (0.1, 0, -0.01), η = 0.1,
    γ = 0.5 (ηγ = 0.05), μ_{t-1} = 0.25, μ_t = 0.4:
    z = (0.98, 0.51, 0.015) -> λ_t = (0.93, 0.46, 0)
    v_t = λ_t - λ' + 0.25 v = (-0.045, -0.04, -0.0225)
    λ'_t = λ_t + 0.4 v_t = (0.912, 0.444, -0.009)."""
    lam_prime, grad = torch.tensor([1.0, 0.5, 0.02]), torch.tensor([0.2, -0.1, 0.05])
    velocity = torch.tensor([0.1, 0.0, -0.01])
    lam, v, ahead = apg_nag_update(lam_prime, grad, velocity, lr=0.1, gamma=0.5, mu_prev=0.25, mu_next=0.4)
    torch.testing.assert_close(lam, torch.tensor([0.93, 0.46, 0.0]))
    torch.testing.assert_close(v, torch.tensor([-0.045, -0.04, -0.0225]))
    torch.testing.assert_close(ahead, torch.tensor([0.912, 0.444, -0.009]))


def test_the_apg_optimiser_prunes_for_good_and_keeps_lambda_non_negative():
    """The same step through :class:`APGNAG` at its 3rd step (μ_2 = 1/4,
    μ_3 = 2/5): the third connection reaches 0, is pruned and stays 0."""
    assert (apg_momentum(1), apg_momentum(2), apg_momentum(3)) == (0.0, 0.25, 0.4)
    lam = torch.nn.Parameter(torch.tensor([1.0, 0.5, 0.02]))
    apg = APGNAG(lam, lr=0.1)
    apg.velocity, apg.steps = torch.tensor([0.1, 0.0, -0.01]), 2
    alive = torch.ones(3, dtype=torch.bool)
    lam.grad = torch.tensor([0.2, -0.1, 0.05])
    assert apg.step(0.5, alive) == 1
    torch.testing.assert_close(lam.detach(), torch.tensor([0.912, 0.444, 0.0]))
    assert alive.tolist() == [True, True, False] and (apg.iterate >= 0).all()
    lam.grad = torch.tensor([0.0, 0.0, -5.0])  # a strong pull back does not revive it
    apg.step(0.0, alive)
    assert lam[2] == 0 and apg.velocity[2] == 0 and not alive[2]


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x[:112] / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    y = torch.tensor(y[:112])
    return TensorDataset(x[:48], y[:48]), TensorDataset(x[48:96], y[48:96]), TensorDataset(x[96:], y[96:])


def run(digits, scope="share", state=None, callbacks=(), **config):
    space = make_space("dso", {**SPACE, "scope": scope}, (1, 8, 8), 10)
    strategy = create_strategy("dso_nas", space, {**TINY, **config}, "cpu", seed=0)
    strategy.progress = None
    return strategy, strategy.run(strategy.search_data(*digits), callbacks=callbacks, state=state)


def test_gamma_zero_prunes_nothing_and_a_large_gamma_prunes_everything(digits):
    strategy, result = run(digits, gamma=0.0)
    space = strategy.space
    assert result.genotype == space.complete() and result.history[-1]["sparsity"] == 0.0
    strategy, result = run(digits, scope="full", gamma=1e3)
    assert result.genotype.num_kept == 0 and result.history[-1]["sparsity"] == 1.0
    assert (strategy.lambdas() == 0).all() and (strategy.supernet.lam == 0).all()
    net = strategy.space.build_network(result.genotype).eval()
    with torch.no_grad():  # only the identity paths are left
        assert net(digits[2].tensors[0]).shape == (16, 10)
    last = result.history[-1]
    assert last["flops"] < result.history[0]["flops"] and last["kept_block0"] == last["kept_block1"] == 0
    figures = strategy.figures(result)  # keep probabilities, λ over the epochs, the final blocks
    assert set(figures) == {"tables.png", "lambda_history.png", "blocks.png"}
    assert strategy.arrays()["lambda_history"].shape == (2, 2, strategy.space.graph.num_edges)  # epochs, blocks, E
    from matplotlib import pyplot as plt  # the plots set the Agg backend

    for figure in figures.values():
        plt.close(figure)


class Keep:
    def __init__(self, directory):
        self.directory, self.states = directory, []

    def on_epoch_end(self, strategy, epoch, metrics):
        path = self.directory / f"epoch_{epoch}.pt"
        save_tensors(path, strategy.state_dict())
        self.states.append(load_tensors(path))


def test_resume_in_the_middle_of_the_search_is_bit_identical(digits, tmp_path):
    keep = Keep(tmp_path)
    config = {"epochs": 3, "gamma": 0.05, "budget": "mac"}
    strategy, result = run(digits, "full", callbacks=[keep], **config)
    mid = keep.states[1]
    assert mid["apg"]["steps"] > 0 and mid["apg"]["velocity"].abs().sum() > 0
    again, resumed = run(digits, "full", state=mid, **config)
    assert resumed.history == result.history and resumed.genotype == result.genotype
    np.testing.assert_array_equal(resumed.tables["connections"], result.tables["connections"])
    for key, value in again.state_dict()["supernet"].items():
        assert torch.equal(value, strategy.state_dict()["supernet"][key]), key
    assert torch.equal(again.apg.velocity, strategy.apg.velocity)


def settle(space, taus, budget, gamma=0.8, steps=200):
    """APG-NAG on G(λ) = ½‖λ − τ‖² with ``budget``'s γ: the kept FLOPs
    share of every block (current / complete)."""
    lam = torch.nn.Parameter(torch.ones(taus.shape))
    alive = torch.ones(taus.shape, dtype=torch.bool)
    apg = APGNAG(lam, lr=0.05, momentum=0.5)
    full = space.structure_flops(np.ones(taus.shape, dtype=bool))
    for _ in range(steps):
        lam.grad = (lam.detach() - taus) * alive
        gamma_now = budget_gamma(space, alive.numpy(), gamma, budget, full)
        apg.step(torch.as_tensor(gamma_now, dtype=torch.float32), alive)
    return space.structure_flops(alive.numpy()) / full


def test_adaptive_flops_evens_out_the_blocks_that_fixed_gamma_leaves_uneven():
    """Two blocks (full scope); block 0's connections matter more (targets τ
    in [0.5, 1.5]) than block 1's (τ in [0, 1]), so a fixed γ leaves block 0
    heavier; Eq. 17 penalises a block by its kept FLOPs share."""
    space = make_space("dso", {**SPACE, "stages": 1, "blocks_per_stage": 2, "scope": "full"}, (1, 8, 8), 10)
    edges = space.graph.num_edges
    order = np.random.default_rng(0).permutation(edges)
    base = torch.as_tensor(order / (edges - 1), dtype=torch.float32)
    taus = torch.stack([base + 0.5, base])
    fixed, adaptive = settle(space, taus, "fixed"), settle(space, taus, "flops")
    assert fixed[0] > fixed[1]
    assert abs(adaptive[0] - adaptive[1]) < abs(fixed[0] - fixed[1])


def test_mac_budget_weights_connections_by_their_target_operation():
    space = make_space("dso", SPACE, (1, 8, 8), 10)
    graph = space.graph
    kept = np.ones((1, graph.num_edges), dtype=bool)
    gamma = budget_gamma(space, kept, 0.1, "mac")[0]
    assert gamma.max() == pytest.approx(0.1) and (gamma > 0).all()
    into = {graph.op_of(int(graph.targets[e])): gamma[e] for e in range(graph.num_edges)
            if graph.targets[e] != graph.output}
    assert into["sep_conv_5x5"] > into["sep_conv_3x3"] > into["avg_pool_3x3"] == into["max_pool_3x3"]
    np.testing.assert_array_equal(budget_gamma(space, kept, 0.1, "fixed"), np.full(kept.shape, 0.1))


def test_bad_settings_name_the_key():
    space = make_space("dso", SPACE, (1, 8, 8), 10)
    with pytest.raises(StrategyError, match="strategies.dso_nas.warmup_epochs"):
        create_strategy("dso_nas", space, {**TINY, "warmup_epochs": 2})
    with pytest.raises(StrategyError, match="strategies.dso_nas.budget"):
        create_strategy("dso_nas", space, {**TINY, "budget": "energy"})
    with pytest.raises(StrategyError, match="search.space"):
        create_strategy("dso_nas", make_space("channel_ratio", None, (1, 8, 8), 10), TINY)


def test_latency_gamma_by_hand():
    """Eq. 19 on drops (0.1, 0.3, 0.2) of kept connections, γ = 1, γ_0 = 0.1;
    a pruned connection gets γ_0."""
    drops, kept = np.array([0.1, 0.3, 0.2, 9.0]), np.array([True, True, True, False])
    np.testing.assert_allclose(latency_gamma(drops, kept, 1.0, 0.1), [0.1, 1.1, 0.6, 0.1])


def test_latency_budget_weighs_the_connections_whose_removal_saves_the_most_time():
    space = make_space("dso", {**SPACE, "levels": 1}, (1, 8, 8), 10)
    graph = space.graph
    shapes = {f"{s.channels}x{s.hw[0]}x{s.hw[1]}" for s in space.layers() if s.kind == "block"}
    slow = {"sep_conv_3x3": 1.0, "sep_conv_5x5": 3.0, "avg_pool_3x3": 0.1, "max_pool_3x3": 0.1}
    table = DSOLatencyTable("hand", "cpu", {op: {k: ms for k in shapes} for op, ms in slow.items()},
                            {k: (0.5, 0.5) for k in shapes}, 0.0)
    space = replace(space, latency=table)
    kept = np.ones((1, graph.num_edges), dtype=bool)
    gamma = budget_gamma(space, kept, 1.0, "latency", gamma0=0.01)[0]
    by_label = dict(zip(graph.labels, gamma))
    assert by_label["in->1.sep_conv_5x5"] == pytest.approx(1.01)  # removing it saves 3 ms in both blocks
    assert by_label["in->1.sep_conv_5x5"] > by_label["in->1.sep_conv_3x3"] > by_label["in->1.avg_pool_3x3"]
    assert space.cost(space.complete())["latency_ms"] == pytest.approx(2 * (sum(slow.values()) + 0.5))


def test_a_search_with_the_latency_budget_reports_latency_and_keeps_its_table(digits, tmp_path):
    space = make_space("dso", SPACE, (1, 8, 8), 10).with_measurements(tmp_path, torch.device("cpu"), True)
    assert (tmp_path / "dso_latency.json").is_file() and space.latency is not None
    strategy = create_strategy("dso_nas", space, {**TINY, "budget": "latency", "gamma": 0.05}, "cpu", seed=0)
    strategy.progress = None
    result = strategy.run(strategy.search_data(*digits))
    assert all(row["latency_ms"] > 0 for row in result.history)
    assert DSOLatencyTable.from_json(strategy.state_dict()["latency_table"]).to_json() == space.latency.to_json()
