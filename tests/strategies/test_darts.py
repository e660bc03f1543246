"""DARTS-family strategies on a tiny proxy network and real 8x8 digits."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from darts_helpers import CELL_STRATEGIES, digits_data, make

from nas_core.io import load_tensors, save_tensors
from nas_core.spaces.cell import SKIP, CellGenotype
from nas_core.strategies.base import SearchStrategy
from nas_core.supernet.cell import MixedOp, channel_shuffle

ALL_CELL = {"darts", "pc_darts", "p_darts", "gdas", "snas"}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add contention
    yield
    torch.set_num_threads(before)


def test_every_cell_strategy_is_registered():
    assert ALL_CELL <= set(CELL_STRATEGIES)


class _Keep:
    """Callback keeping the strategy state after a given epoch."""

    def __init__(self, at: int) -> None:
        self.at, self.state = at, None

    def on_epoch_end(self, strategy: SearchStrategy, epoch: int, metrics: dict) -> None:
        if epoch == self.at:
            self.state = strategy.state_dict()


def _epochs_for(name: str) -> dict:
    return {"epochs": 1} if name == "p_darts" else {}  # p_darts: 2 stages x 1 epoch


@pytest.mark.slow
@pytest.mark.parametrize("name", CELL_STRATEGIES)
def test_strategy_runs_and_resume_equals_uninterrupted(name, tmp_path):
    keep = _Keep(at=1)
    full = make(name, **_epochs_for(name))
    result = full.run(digits_data(n_w=16, n_val=16), callbacks=[keep])
    assert isinstance(result.genotype, CellGenotype)
    assert CellGenotype.from_json(result.genotype.to_json()) == result.genotype
    for kind in ("normal", "reduce"):
        table = result.probabilities[kind]
        assert table.shape == (14, len(result.op_names))
        np.testing.assert_allclose(table.sum(axis=1), 1.0, atol=1e-6)
    assert {"loss", "acc", "skip_normal", "skip_reduce", "peak_rss_mb"} <= set(result.history[-1])
    assert len(result.history) == full.num_epochs() == 2

    save_tensors(tmp_path / "state.pt", keep.state)  # through disk, weights_only load
    resumed = make(name, **_epochs_for(name)).run(digits_data(n_w=16, n_val=16), state=load_tensors(tmp_path / "state.pt"))
    assert resumed.genotype == result.genotype
    for kind in ("normal", "reduce"):
        np.testing.assert_array_equal(resumed.probabilities[kind], result.probabilities[kind])
    assert _stable(resumed.history) == _stable(result.history)


def _stable(history: list[dict]) -> list[dict]:
    """History without the wall-clock and memory readings."""
    return [{k: v for k, v in h.items() if k not in ("step_time_s", "peak_rss_mb", "cuda_peak_mb")}
            for h in history]


def test_same_seed_same_genotype_and_alpha():
    a, b = make("darts", epochs=1), make("darts", epochs=1)
    ra, rb = a.run(digits_data(n_w=16)), b.run(digits_data(n_w=16))
    assert ra.genotype == rb.genotype
    assert torch.equal(a.arch.alpha_normal, b.arch.alpha_normal)
    c = make("darts", epochs=1, seed=1)
    c.run(digits_data(n_w=16))
    assert not torch.equal(a.arch.alpha_normal, c.arch.alpha_normal)


def test_pc_darts_with_k1_equals_darts():
    darts = make("darts", epochs=1)
    pc = make("pc_darts", epochs=1, pc_k=1, pc_edge_norm=False)
    rd, rp = darts.run(digits_data(n_w=16)), pc.run(digits_data(n_w=16))
    assert torch.equal(darts.arch.alpha_normal, pc.arch.alpha_normal)
    assert torch.equal(darts.arch.alpha_reduce, pc.arch.alpha_reduce)
    assert rd.genotype == rp.genotype and rd.history[0]["loss"] == rp.history[0]["loss"]


def test_partial_channels_bypass_and_shuffle():
    op = MixedOp(4, 1, ("none", "sep_conv_3x3"), k=2)
    x = torch.randn(2, 4, 6, 6)
    out = op(x, torch.tensor([0.5, 0.5]))
    # [mixed0, mixed1, x2, x3] shuffled with 2 groups -> [mixed0, x2, mixed1, x3]
    assert torch.equal(out[:, 1], x[:, 2]) and torch.equal(out[:, 3], x[:, 3])
    assert torch.equal(channel_shuffle(x, 1), x)


def test_pc_darts_edge_normalisation_softmax_per_node():
    pc = make("pc_darts", epochs=1)
    pc.setup(digits_data())
    w = pc.arch.edge_weights("normal").detach()
    for start, stop in ((0, 2), (2, 5), (5, 9), (9, 14)):
        assert float(w[start:stop].sum()) == pytest.approx(1.0)


def _count_op_calls(strategy, x) -> int:
    calls = []
    hooks = [op.register_forward_hook(lambda *a: calls.append(1))
             for m in strategy.net.modules() if isinstance(m, MixedOp) for op in m.ops]
    try:
        mixes = [strategy.mix(kind) for kind in ("normal", "reduce")]
        logits = strategy.net(x, *mixes)
    finally:
        for h in hooks:
            h.remove()
    return len(calls), logits


def test_gdas_forward_evaluates_exactly_one_op_per_edge():
    data = digits_data()
    x, y = next(iter(data.train_w))
    gdas, darts = make("gdas"), make("darts")
    gdas.setup(data)
    darts.setup(data)
    n_edges = 14 * len(gdas.net.cells)
    calls, logits = _count_op_calls(gdas, x)
    assert calls == n_edges
    assert _count_op_calls(darts, x)[0] == n_edges * len(darts.op_names)
    torch.nn.functional.cross_entropy(logits, y).backward()  # straight-through reaches alpha
    assert gdas.arch.alpha_normal.grad.abs().sum() > 0 and gdas.arch.alpha_reduce.grad.abs().sum() > 0


def test_gdas_temperature_decays_linearly():
    result = make("gdas", epochs=2, gdas_tau_max=10.0, gdas_tau_min=0.1).run(digits_data())
    assert [h["tau"] for h in result.history] == [10.0, pytest.approx(0.1)]


def test_snas_resource_penalty_prefers_cheap_ops():
    snas = make("snas", epochs=1, snas_resource_weight=1.0, arch_lr=0.05)
    snas.run(digits_data())
    probs = snas.probabilities()["normal"].mean(axis=0)
    names = snas.op_names
    cheap = np.mean([probs[names.index(n)] for n in ("none", "skip_connect", "max_pool_3x3")])
    costly = np.mean([probs[names.index(n)] for n in ("sep_conv_5x5", "dil_conv_5x5")])
    assert cheap > costly


class _ForceSkip:
    """Callback making skip-connect the strongest op on every edge."""

    def on_epoch_end(self, strategy, epoch, metrics) -> None:
        force_skip(strategy)


def force_skip(strategy) -> None:
    with torch.no_grad():
        for kind in ("normal", "reduce"):
            alpha = strategy.arch.alpha(kind)
            for e, ops in enumerate(strategy.edge_ops[kind]):
                if SKIP in ops:
                    alpha[e, ops.index(SKIP)] = 5.0


def test_p_darts_drops_ops_as_scheduled_and_caps_skips():
    kept = []

    class Record:
        def on_epoch_end(self, strategy, epoch, metrics):
            kept.append((strategy.probabilities()["normal"].copy(), [tuple(o) for o in strategy.edge_ops["normal"]]))

    p = make("p_darts", epochs=1, pdarts_cells=[1, 2, 3], pdarts_ops_kept=[5, 3],
             skip_dropout=[0.0, 0.4, 0.7], skip_cap=2)
    result = p.run(digits_data(), callbacks=[_ForceSkip(), Record()])
    assert [h["ops_per_edge"] for h in result.history] == [8, 5, 3]
    assert [h["cells"] for h in result.history] == [1, 2, 3]
    assert [h["skip_dropout"] for h in result.history] == [0.0, 0.4, 0.7]
    assert all(len(m.ops) == 3 for m in p.net.modules() if isinstance(m, MixedOp))
    probs_stage1, ops_stage2 = kept[0][0], kept[1][1]
    for e, ops in enumerate(ops_stage2):  # stage 2 keeps the 5 strongest ops of stage 1
        order = np.argsort(-probs_stage1[e], kind="stable")[:5]
        assert set(ops) == {p.op_names[j] for j in order}
    force_skip(p)
    capped = p.derive()
    assert capped.genotype.count(SKIP, "normal") == 2
    assert CellGenotype.from_dict(capped.extras["uncapped_genotype"]).count(SKIP, "normal") > 2


def test_second_order_order_refused_for_gumbel_strategies():
    with pytest.raises(ValueError, match="order"):
        make("gdas", order=2)


def test_space_must_be_a_cell_space():
    from nas_core.strategies import STRATEGIES

    with pytest.raises(TypeError, match="CellSpace"):
        STRATEGIES.get("darts")(object(), make("darts").config, torch.device("cpu"))


def test_bad_cell_params_name_the_key():
    from nas_core.config import ParamsError, validate_params

    with pytest.raises(ParamsError, match=r"search\.cell\.pdarts_ops_kept = \[5, 6\]"):
        validate_params({"search": {"cell": {"pdarts_ops_kept": [5, 6]}}})
    with pytest.raises(ParamsError, match=r"search\.cell\.skip_dropout"):
        validate_params({"search": {"cell": {"skip_dropout": [0.1]}}})
    with pytest.raises(ValueError, match=r"pdarts_ops_kept.*op set 'S5'"):
        make("p_darts", op_set="S5", pdarts_ops_kept=[5])
    with pytest.raises(ValueError, match=r"search\.cell\.op_set.*'darts'"):
        make("darts", op_set="dart")
