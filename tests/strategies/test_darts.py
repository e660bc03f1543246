"""DARTS-family strategies on a tiny proxy network and real 8x8 digits."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from darts_helpers import CELL_STRATEGIES, digits_data, digits_tensors, make, tiny_params, tiny_space
from torch.utils.data import TensorDataset

from nas_core.spaces import make_space
from nas_core.spaces.cell import SKIP, CellGenotype, channel_shuffle
from nas_core.strategies import STRATEGIES, StrategyError, create_strategy
from nas_core.supernet.cell import MixedOp, SearchNetwork
from tests.train.one_thread import one_thread  # noqa: F401

ALL_CELL = {"darts", "pc_darts", "p_darts", "gdas", "snas"}


def test_every_cell_strategy_is_registered():
    assert ALL_CELL <= set(CELL_STRATEGIES)


# Every strategy's one tiny run and bit-identical resume through a checkpoint
# file: tests/contracts/test_strategies.py (over the registry).


def test_search_data_shuffles_with_the_global_rng():
    strategy = make("darts")
    x, y = digits_tensors(40)
    data = strategy.search_data(TensorDataset(x[:20], y[:20]), TensorDataset(x[20:30], y[20:30]),
                                TensorDataset(x[30:], y[30:]))
    assert data.train_w.batch_size == 16 and data.train_a.batch_size == 16
    torch.manual_seed(5)
    first = torch.cat([b[1] for b in data.train_w])
    torch.manual_seed(5)
    assert torch.equal(torch.cat([b[1] for b in data.train_w]), first)
    assert len(make("darts", arch_batch_size=4).search_data(x, x[:8], x).train_a) == 2


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
    np.testing.assert_allclose(pc.tables()["edges_normal"], w.double().numpy())


def test_warmup_freezes_alpha():
    darts = make("darts", epochs=2, warmup_epochs=1)
    darts.setup(digits_data())
    alpha = darts.arch.alpha_normal.detach().clone()
    darts.train_epoch(0, digits_data())
    assert torch.equal(darts.arch.alpha_normal, alpha)
    darts.train_epoch(1, digits_data())
    assert not torch.equal(darts.arch.alpha_normal, alpha)


def _count_op_calls(strategy, x) -> int:
    calls = []
    hooks = [op.register_forward_hook(lambda *a: calls.append(1))
             for m in strategy.supernet.modules() if isinstance(m, MixedOp) for op in m.ops]
    try:
        mixes = [strategy.mix(kind) for kind in ("normal", "reduce")]
        logits = strategy.supernet(x, *mixes)
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
    n_edges = 14 * len(gdas.supernet.cells)
    calls, logits = _count_op_calls(gdas, x)
    assert calls == n_edges
    assert _count_op_calls(darts, x)[0] == n_edges * len(darts.op_names)
    torch.nn.functional.cross_entropy(logits, y).backward()  # straight-through reaches alpha
    assert gdas.arch.alpha_normal.grad.abs().sum() > 0 and gdas.arch.alpha_reduce.grad.abs().sum() > 0


def test_gdas_temperature_decays_linearly():
    result = make("gdas", epochs=2, tau_max=10.0, tau_min=0.1).run(digits_data())
    assert [h["tau"] for h in result.history] == [10.0, pytest.approx(0.1)]


def test_snas_resource_penalty_prefers_cheap_ops():
    snas = make("snas", epochs=1, resource_weight=1.0, arch_lr=0.05)
    snas.run(digits_data())
    probs = snas.tables()["normal"].mean(axis=0)
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
            kept.append((strategy.tables()["normal"].copy(), [tuple(o) for o in strategy.edge_ops["normal"]]))

    p = make("p_darts", epochs=1, pdarts_cells=[1, 2, 3], pdarts_ops_kept=[5, 3],
             skip_dropout=[0.0, 0.4, 0.7], skip_cap=2)
    result = p.run(digits_data(), callbacks=[_ForceSkip(), Record()])
    assert [h["ops_per_edge"] for h in result.history] == [8, 5, 3]
    assert [h["cells"] for h in result.history] == [1, 2, 3]
    assert [h["skip_dropout"] for h in result.history] == [0.0, 0.4, 0.7]
    assert all(len(m.ops) == 3 for m in p.supernet.modules() if isinstance(m, MixedOp))
    probs_stage1, ops_stage2 = kept[0][0], kept[1][1]
    for e, ops in enumerate(ops_stage2):  # stage 2 keeps the 5 strongest ops of stage 1
        order = np.argsort(-probs_stage1[e], kind="stable")[:5]
        assert set(ops) == {p.op_names[j] for j in order}
    assert ((result.tables["normal"] > 0).sum(axis=1) == 3).all()  # scattered onto the full op set
    force_skip(p)
    capped = p.derive()
    assert capped.genotype.count(SKIP, "normal") == 2
    assert CellGenotype.from_dict(capped.extras["uncapped_genotype"]).count(SKIP, "normal") > 2


def test_p_darts_warmup_is_per_stage():
    p = make("p_darts", epochs=2, warmup_epochs=1)
    assert [p.updates_arch(e) for e in range(4)] == [False, True, False, True]


class _States:
    def __init__(self) -> None:
        self.states = []

    def on_epoch_end(self, strategy, epoch, metrics) -> None:
        self.states.append(strategy.state_dict())


def test_p_darts_checkpoints_reload_their_stage_supernet():
    """As the DC-NAS stages do: a fresh strategy, setup(None), the last
    state, then each epoch's supernet."""
    keep = _States()
    make("p_darts", epochs=1).run(digits_data(), callbacks=[keep])
    reader = make("p_darts", epochs=1)
    reader.setup(None)
    reader.load_state_dict(keep.states[-1])
    rng = torch.get_rng_state()
    assert [reader.supernet_key(s) for s in keep.states] == [0, 1]
    for state in keep.states:
        net = reader.load_supernet(state)
        assert isinstance(net, SearchNetwork) and net.path_depth() == [1, 2][state["stage"]]
        assert all(torch.equal(v, state["supernet"][k]) for k, v in net.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)
    rows = reader.space.sample(reader.tables(), 5, seed=0).archs
    reader.supernet.check_rows(rows)  # the last stage's tables sample rows its supernet runs
    assert make("darts").supernet_key(keep.states[0]) == 0


def test_configs_hold_only_their_keys_and_published_defaults():
    fields = {n: set(STRATEGIES.get(n).Config.model_fields) for n in ALL_CELL}
    assert "pc_k" in fields["pc_darts"] and not any("pc_k" in fields[n] for n in ALL_CELL - {"pc_darts"})
    assert {"pdarts_cells", "skip_cap"} <= fields["p_darts"] and "cells" not in fields["p_darts"]
    assert "tau_max" in fields["gdas"] and "resource_weight" not in fields["gdas"]
    assert "order" not in fields["gdas"] | fields["snas"]
    darts = STRATEGIES.get("darts").Config()
    assert (darts.cells, darts.init_channels, darts.epochs, darts.batch_size, darts.w_lr, darts.w_lr_min,
            darts.arch_lr, darts.arch_betas, darts.arch_weight_decay) == (8, 16, 50, 64, 0.025, 0.001, 3e-4,
                                                                          (0.5, 0.999), 1e-3)
    pc = STRATEGIES.get("pc_darts").Config()
    assert (pc.pc_k, pc.batch_size, pc.w_lr, pc.arch_lr, pc.warmup_epochs) == (4, 256, 0.1, 6e-4, 15)
    pd = STRATEGIES.get("p_darts").Config()
    assert (pd.pdarts_cells, pd.pdarts_ops_kept, pd.skip_cap) == ([5, 11, 17], [5, 3], 2)
    gdas = STRATEGIES.get("gdas").Config()
    assert (gdas.tau_max, gdas.tau_min) == (10.0, 0.1)


@pytest.mark.parametrize("name, params, message", [
    ("darts", {"warmup_epochs": 2}, r"strategies\.darts\.warmup_epochs = 2: must be < strategies\.darts\.epochs"),
    ("darts", {"w_lr_min": 1.0}, r"strategies\.darts\.w_lr_min = 1\.0"),
    ("pc_darts", {"pc_k": 3}, r"strategies\.pc_darts\.pc_k = 3: must divide"),
    ("p_darts", {"pdarts_ops_kept": [5, 6]}, r"strategies\.p_darts\.pdarts_ops_kept = \[5, 6\]"),
    ("p_darts", {"skip_dropout": [0.1]}, r"strategies\.p_darts\.skip_dropout"),
    ("gdas", {"tau_min": 20.0}, r"strategies\.gdas\.tau_min = 20\.0: must be <="),
    ("snas", {"tau_min": 2.0}, r"strategies\.snas\.tau_min"),
    ("gdas", {"order": 2}, r"strategies\.gdas\.order"),
])
def test_bad_params_name_the_key(name, params, message):
    with pytest.raises(StrategyError, match=message):
        create_strategy(name, tiny_space(), tiny_params(name, **params))


def test_bad_space_or_op_set_is_refused():
    with pytest.raises(ValueError, match=r"pdarts_ops_kept.*op set 'S5'"):
        make("p_darts", op_set="S5", pdarts_ops_kept=[5])
    with pytest.raises(ValueError, match=r"spaces\.cell\.op_set.*'darts'"):
        make("darts", op_set="dart")
    with pytest.raises(StrategyError, match="strategy 'darts' searches cell"):
        create_strategy("darts", make_space("layerwise", None, (1, 8, 8), 10), tiny_params("darts"))
    with pytest.raises(TypeError, match="CellSpace"):
        STRATEGIES.get("darts")(object(), make("darts").config, torch.device("cpu"))


def test_data_parallel_variant_is_the_cell_mixin():
    from nas_core.strategies.darts import DataParallelCell

    cls = STRATEGIES.get("gdas").data_parallel()
    assert issubclass(cls, DataParallelCell) and issubclass(cls, STRATEGIES.get("gdas"))
    assert cls.__name__ == "DataParallelGdasStrategy" and cls.data_parallel() is cls
    assert STRATEGIES.get("gdas").data_parallel() is cls  # one class per strategy
