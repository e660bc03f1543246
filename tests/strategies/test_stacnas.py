"""StacNAS: operator correlation and clustering, one-level optimisation,
gradient confusion, and a tiny three-phase run on real 8x8 digits. The
contract (a run, bit-identical resume, the DC-NAS chain) is
tests/contracts/test_strategies.py."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from darts_helpers import digits_data, digits_tensors, tiny_space
from torch.nn import functional as F

from nas_core.spaces.cell import KINDS, NUM_EDGES, ZERO, edge_index, op_set
from nas_core.strategies import StrategyError, create_strategy
from nas_core.strategies.stacnas import StacNasConfig
from nas_core.strategies.stacnas_clustering import (
    PUBLISHED_GROUPS,
    OpGroup,
    candidate_ops,
    cluster_ops,
    operator_correlation,
    published_groups,
)
from nas_core.supernet.cell import MixWeights, SearchNetwork
from nas_core.train.confusion import gradient_confusion, mean_confusion
from tests.train.one_thread import one_thread  # noqa: F401

THRESHOLD = StacNasConfig().cluster_threshold
TINY = dict(init_channels=4, epochs=1, batch_size=16, cluster_cells=3, stage1_cells=3, stage2_cells=4,
            cluster_images=32, zeta_iterations=2, zeta_batches=2)


def make(op_set_name: str = "darts", **overrides):
    return create_strategy("stacnas", tiny_space(op_set_name), {**TINY, **overrides}, "cpu", seed=0)


def uniform(n_ops: int) -> MixWeights:
    return MixWeights(torch.full((NUM_EDGES, n_ops), 1.0 / n_ops))


# ---------------------------------------------------------------- correlation and clustering

def test_two_identical_ops_correlate_at_one_and_form_one_group():
    names = ("none", "skip_connect", "max_pool_3x3", "sep_conv_3x3", "sep_conv_5x5")
    torch.manual_seed(0)
    net = SearchNetwork(names, 1, 10, 4, 2)
    for edge in net.cells[0].edges:  # cell 0: sep_conv_5x5 made a copy of sep_conv_3x3 on every edge
        edge.ops[4] = copy.deepcopy(edge.ops[3])
    x, _ = digits_tensors(48)
    mix = uniform(len(names))
    rho = operator_correlation(net, lambda b: net(b, mix, mix), [x[:24], x[24:]], names)
    assert rho.shape == (2 * NUM_EDGES, 3, 3)  # two cells x 14 edges, three candidates (none, skip excluded)
    np.testing.assert_allclose(rho[:NUM_EDGES, 1, 2], 1.0, atol=1e-9)  # the identical pair
    assert (rho[NUM_EDGES:, 1, 2] < 0.999).all()  # cell 1 keeps two different convolutions
    assert (np.abs(rho[:, 0, 1]) < 0.999).all()  # pool vs conv
    groups = cluster_ops(rho[:NUM_EDGES].mean(0), names, threshold=0.99)
    assert groups == (OpGroup("skip_connect", ("skip_connect",)), OpGroup("max_pool_3x3", ("max_pool_3x3",)),
                      OpGroup("sep_conv_3x3", ("sep_conv_3x3", "sep_conv_5x5")))


def structured_correlation(groups, op_names, within, cross, seed=0) -> np.ndarray:
    """A correlation matrix of the candidate ops: ``within`` inside a
    published group (a number or {op: value}), random in [-cross, cross]
    across groups."""
    names = candidate_ops(op_names)
    rng = np.random.default_rng(seed)
    rho = rng.uniform(-cross, cross, size=(len(names), len(names)))
    rho = (rho + rho.T) / 2
    for group in groups:
        idx = [names.index(m) for m in group if m in names]
        for i in idx:
            for j in idx:
                rho[i, j] = within[group[0]] if isinstance(within, dict) else within
    np.fill_diagonal(rho, 1.0)
    return rho


def test_the_papers_s1_groups_are_recovered_from_its_correlations():
    """Figure 1 / §3.4.1: pools 0.52, SepConvs 0.38, DilConvs 0.27, other
    pairs weakly correlated -> appendix A's four groups and key operators."""
    names = op_set("S1")
    within = {"max_pool_3x3": 0.52, "sep_conv_3x3": 0.38, "dil_conv_3x3": 0.27}
    rho = structured_correlation(PUBLISHED_GROUPS["S1"], names, within, 0.2)
    groups = cluster_ops(rho, names, THRESHOLD)
    assert groups == published_groups("S1", names)
    assert [g.key for g in groups] == ["max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3"]


@pytest.mark.parametrize("name", ["S3", "S4", "S5"])
def test_the_published_groups_of_other_op_sets_are_recovered(name):
    names = op_set(name)
    rho = structured_correlation(PUBLISHED_GROUPS[name], names, 0.4, 0.15, seed=1)
    assert cluster_ops(rho, names, THRESHOLD) == published_groups(name, names)


def test_uncorrelated_ops_stay_apart_and_a_wrong_matrix_is_named():
    names = op_set("S1")
    groups = cluster_ops(np.eye(6), names, THRESHOLD)
    assert len(groups) == 7 and all(len(g.members) == 1 for g in groups)
    with pytest.raises(ValueError, match="expected shape"):
        cluster_ops(np.eye(4), names, THRESHOLD)


# ---------------------------------------------------------------- gradient confusion

def test_gradient_confusion_on_a_two_parameter_problem():
    """l_b(w) = ||w - b||^2 / 2, so grad l_b = w - b; w = (1, 2).
    Draw 1: grads (1, 2), (-1, 2), (0, -2): -<.,.> = -3, 4, 4 -> 4.
    Draw 2: grads (3, 0), (-1, 1): -<.,.> = 3 -> 3.
    zeta = mean(4, 3) / M = 3.5 / 2."""
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    draws = [[torch.tensor([0.0, 0.0]), torch.tensor([2.0, 0.0]), torch.tensor([1.0, 4.0])],
             [torch.tensor([-2.0, 2.0]), torch.tensor([2.0, 1.0])]]
    zeta = mean_confusion(lambda b: 0.5 * ((w - b) ** 2).sum(), [w], draws)
    assert zeta == pytest.approx(1.75)
    aligned = [torch.tensor([1.0, 0.0]), torch.tensor([2.0, 0.0])]
    assert gradient_confusion(aligned) == pytest.approx(-2.0)  # agreeing gradients: negative, i = j excluded
    with pytest.raises(ValueError, match=">= 2"):
        gradient_confusion(aligned[:1])


# ---------------------------------------------------------------- one-level optimisation

def test_one_level_updates_w_and_alpha_from_the_same_batch():
    strategy = make(clustering="published", w_grad_clip=1e9)
    strategy.setup(None)
    assert strategy.phase == 1
    strategy.one_level_now = True
    x, y = digits_tensors(16)
    weights, arch = list(strategy.supernet.parameters()), list(strategy.arch.parameters())
    before = [p.detach().clone() for p in weights + arch]
    buffers = {n: b.clone() for n, b in strategy.supernet.named_buffers()}
    loss = F.cross_entropy(strategy.supernet(x, *(strategy.mix(k) for k in KINDS)), y)
    expected = torch.autograd.grad(loss, arch + weights, allow_unused=True)
    with torch.no_grad():
        for n, b in strategy.supernet.named_buffers():
            b.copy_(buffers[n])
    strategy._weight_step(x, y)
    for p, g in zip(arch + weights, expected):
        if g is None:
            assert p.grad is None
        else:
            torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7)
    assert all(not torch.equal(p, b) for p, b in zip(arch, before[len(weights):]))  # alpha stepped
    assert any(not torch.equal(p, b) for p, b in zip(weights, before[:len(weights)]))  # w stepped
    assert not any(torch.equal(g, torch.zeros_like(g)) for g in expected[:len(arch)])


def test_one_level_stages_never_take_a_separate_alpha_step(monkeypatch):
    strategy = make(clustering="published")
    data = digits_data(n_w=16, n_a=16, n_val=16)
    strategy.setup(data)
    monkeypatch.setattr(strategy, "_arch_step", lambda *a: pytest.fail("two-level alpha step in one-level"))
    alpha = strategy.arch.alpha_normal.detach().clone()
    metrics = strategy.train_epoch(0, data)
    assert not torch.equal(strategy.arch.alpha_normal, alpha) and np.isfinite(metrics["zeta"])
    two = make(clustering="published", optimisation="two_level")
    two.setup(data)
    two.one_level_now = False
    assert two.updates_arch(0)


# ---------------------------------------------------------------- the three phases

@pytest.fixture(scope="module")
def run():
    torch.manual_seed(0)
    strategy = make()
    result = strategy.run(digits_data(n_w=32, n_a=16, n_val=16))
    return strategy, result


@pytest.mark.slow
def test_three_phases_cluster_then_activate_one_group_per_edge(run):
    strategy, result = run
    assert [row["phase"] for row in result.history] == [0.0, 1.0, 2.0]
    assert [row["cells"] for row in result.history] == [3.0, 3.0, 4.0]
    assert "zeta" in result.history[1] and "zeta" in result.history[2]
    members = [m for g in strategy.groups for m in g.members]
    assert sorted(members) == sorted(n for n in strategy.op_names if n != ZERO)  # a partition
    arrays = strategy.arrays()
    rho = arrays["stacnas_correlation"]
    np.testing.assert_allclose(rho, rho.T)
    np.testing.assert_allclose(np.diag(rho), 1.0)
    for kind in KINDS:
        table = result.tables[kind]
        np.testing.assert_allclose(table.sum(1), 1.0)
        for e, g in enumerate(arrays[f"stacnas_activated_{kind}"]):
            allowed = {ZERO, *strategy.groups[g].members}
            present = {strategy.op_names[j] for j in np.flatnonzero(table[e])}
            assert present == allowed  # stage 2 mixes exactly none + the activated group
        for i, (op, src) in enumerate(getattr(result.genotype, kind)):  # each kept op is of its edge's group
            group = strategy.groups[arrays[f"stacnas_activated_{kind}"][edge_index(2 + i // 2, src)]]
            assert op in group.members
    assert "stacnas_correlation.png" in strategy.figures(result)


def test_a_bad_setting_names_its_key():
    with pytest.raises(StrategyError, match="strategies.stacnas.optimisation"):
        make(optimisation="bilevel")
    with pytest.raises(StrategyError, match="strategies.stacnas.zeta_batches"):
        make(zeta_batches=1)
    with pytest.raises(StrategyError, match="torchrun"):
        type(make()).data_parallel()


def test_depth_match_picks_the_stage1_depth_whose_zeta_is_closest_to_the_final_networks():
    strategy = make(clustering="published", depth_match=True, depth_candidates=[1, 3], zeta_iterations=1)
    data = digits_data(n_w=16, n_a=16, n_val=16)
    strategy.setup(data)
    metrics = strategy.train_epoch(0, data)
    gaps = {d: abs(metrics[f"zeta_depth_{d}"] - metrics["zeta_final_init"]) for d in (1, 3)}
    assert metrics["matched_cells"] == min(gaps, key=gaps.get)
    assert len(strategy.supernet.cells) == metrics["matched_cells"] == strategy.state_dict()["stage1_cells"]


@pytest.mark.slow
def test_a_depth_matched_run_resumes_bit_identically():
    """The matched depth lives in the checkpoint: a run restarted after
    stage 1's epoch ends where the uninterrupted run ended."""
    settings = dict(clustering="published", depth_match=True, depth_candidates=[1, 3], zeta_iterations=1)
    states = []

    class Keep:
        def on_epoch_end(self, strategy, epoch, metrics):
            states.append(strategy.state_dict())

    torch.manual_seed(0)
    result = make(**settings).run(digits_data(n_w=16, n_a=16, n_val=16), callbacks=[Keep()])
    again = make(**settings).run(digits_data(n_w=16, n_a=16, n_val=16), state=states[0])
    timing = ("step_time_s", "peak_rss_mb")
    assert [{k: v for k, v in r.items() if k not in timing} for r in again.history] == \
           [{k: v for k, v in r.items() if k not in timing} for r in result.history]
    assert again.genotype == result.genotype and "matched_cells" in result.history[0]
    for key, table in result.tables.items():
        np.testing.assert_array_equal(again.tables[key], table)
