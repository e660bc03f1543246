"""DARTS cell space: ops, op sets, genotypes (round-trip, validation),
derivation rule, encode/decode, random/mutate, sampling and Eq. 9, the
final network (cost, export), rendering, and the search supernet's
one-path protocol (path_begin/path_step/path_parameter_names)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nas_core.spaces import SPACES, GenotypeError, make_space
from nas_core.spaces.cell import (
    EDGES,
    NUM_EDGES,
    OP_SETS,
    ROW_WIDTH,
    SKIP,
    CellGenotype,
    CellNetwork,
    CellSpace,
    cap_skips,
    derive_cell,
    derive_genotype,
    edge_index,
    node_edges,
    op_set,
    render_cell,
)
from nas_core.spaces.cell.ops import CELL_OPS, make_op
from nas_core.supernet.base import Supernet
from nas_core.supernet.cell import ArchParams, MixedOp, MixWeights, SearchNetwork, path_mix
from tests.train.one_thread import one_thread  # noqa: F401

S1 = op_set("darts")
SPACE = make_space("cell", {"final_cells": 3, "final_channels": 4}, (1, 8, 8), 10)
GENOTYPE = CellGenotype(
    normal=(("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 1),
            ("skip_connect", 0), ("dil_conv_3x3", 2), ("sep_conv_5x5", 0), ("max_pool_3x3", 4)),
    reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)))


def _peaked(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.dirichlet(np.full(len(S1), 0.3), size=14) for k in ("normal", "reduce")}


# ---------------------------------------------------------------- ops, op sets, edges
def test_fourteen_edges_two_per_input_and_node():
    assert NUM_EDGES == 14 and len(set(EDGES)) == 14
    assert [len(node_edges(n)) for n in range(2, 6)] == [2, 3, 4, 5]
    assert all(src < node for node, src in EDGES)


@pytest.mark.parametrize("name", CELL_OPS.names())
@pytest.mark.parametrize("stride", [1, 2])
def test_every_op_keeps_channels_and_applies_stride(name, stride):
    out = make_op(name, 4, stride, affine=False)(torch.randn(2, 4, 8, 8))
    assert out.shape == (2, 4, 8 // stride, 8 // stride)


def test_op_sets_match_the_papers():
    assert S1 == OP_SETS.get("S1") and len(S1) == 8
    assert set(op_set("S5")) == {"none", "skip_connect", "sep_conv_3x3"}
    assert "sep_conv_7x7" in op_set("S3") and "max_pool_5x5" in op_set("S2")
    assert not any("pool" in op for op in op_set("S4"))
    for name in OP_SETS.names():
        assert set(op_set(name)) <= set(CELL_OPS.names())
    with pytest.raises(ValueError, match="op_set.*did you mean 'S2'"):
        op_set("S22")


def test_space_is_registered_and_config_is_validated():
    assert SPACES.get("cell") is CellSpace
    assert CellSpace.Config().final_cells == 20 and CellSpace.Config().final_channels == 36  # DARTS CIFAR-10
    assert SPACE.input_shape == (1, 8, 8) and SPACE.op_names == S1
    with pytest.raises(ValueError, match="did you mean 'darts'"):
        make_space("cell", {"op_set": "dart"}, (1, 8, 8), 10)
    with pytest.raises(ValueError, match="final_channels"):
        make_space("cell", {"final_channels": 1}, (1, 8, 8), 10)
    with pytest.raises(ValueError, match="final_cells"):
        make_space("cell", {"final_cells": 0}, (1, 8, 8), 10)


# ---------------------------------------------------------------- genotypes
def test_genotype_round_trip_carries_the_space():
    d = GENOTYPE.to_dict()
    assert d["space"] == "cell"
    assert SPACE.genotype_from_dict(d) == GENOTYPE
    assert CellGenotype.from_json(GENOTYPE.to_json()) == GENOTYPE
    assert GENOTYPE.count(SKIP, "normal") == 2
    assert str(GENOTYPE).startswith("normal: sep_conv_3x3(0) + sep_conv_3x3(1) | ")


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["normal"].__setitem__(0, ["none", 0]), "normal cell, node 2: op 'none' is not allowed"),
    (lambda d: d["reduce"].__setitem__(2, ["max_pool_3x3", 3]), "reduce cell, node 3: input 3 must be in 0..2"),
    (lambda d: d["normal"].__setitem__(1, ["sep_conv_3x4", 1]), "did you mean 'sep_conv_3x3'"),
    (lambda d: d.__setitem__("space", "layerwise"), "'space' = 'layerwise', expected 'cell'"),
    (lambda d: d.pop("space"), "'space' = None"),
    (lambda d: d.pop("reduce"), r"missing keys \['reduce'\]"),
    (lambda d: d["normal"].pop(), "expected 8 .op, input. pairs, got 7"),
    (lambda d: d["normal"].__setitem__(3, ["sep_conv_3x3", 0]), "node 3: both pairs read input 0"),
], ids=["zero-op", "input-range", "misspelt-op", "other-space", "no-space", "missing-key", "short-cell",
        "same-input"])
def test_genotype_validation_names_the_problem(edit, message):
    d = GENOTYPE.to_dict()
    edit(d)
    with pytest.raises(GenotypeError, match=message):
        SPACE.genotype_from_dict(d)


def test_ops_must_belong_to_the_spaces_op_set():
    s5 = make_space("cell", {"op_set": "S5"}, (1, 8, 8), 10)
    with pytest.raises(GenotypeError, match="normal cell, node 4: op 'dil_conv_3x3' is not in op set 'S5'"):
        s5.genotype_from_dict(GENOTYPE.to_dict())
    with pytest.raises(GenotypeError, match="not in op set 'S5'"):
        s5.encode(GENOTYPE)


def test_derivation_keeps_two_strongest_edges_and_never_zero():
    weights = np.full((14, len(S1)), 0.01)
    weights[:, 0] = 0.9  # "none" dominates every edge; it must still be ignored
    for e, (_, src) in enumerate(EDGES):
        weights[e, 4] = 0.1 + 0.01 * src  # sep_conv_3x3: later inputs are stronger
    weights[node_edges(5)[0], 7] = 0.5  # node 5 <- input 0 by dil_conv_5x5, the strongest there
    cell = derive_cell(weights, S1)
    assert all(op != "none" for op, _ in cell)
    assert [src for _, src in cell] == [0, 1, 1, 2, 2, 3, 0, 4]
    assert cell[6] == ("dil_conv_5x5", 0) and cell[7] == ("sep_conv_3x3", 4)


def test_derivation_of_random_weights_is_a_valid_genotype():
    rng = np.random.default_rng(0)
    g = derive_genotype(rng.random((14, 8)), rng.random((14, 8)), S1)
    assert SPACE.genotype_from_dict(g.to_dict()) == g


def test_skip_cap_replaces_the_weakest_skips():
    weights = np.full((14, len(S1)), 0.05)
    weights[:, S1.index(SKIP)] = np.linspace(0.5, 0.9, 14)  # skip wins everywhere
    weights[:, S1.index("sep_conv_3x3")] = 0.3
    uncapped = derive_cell(weights, S1)
    assert sum(op == SKIP for op, _ in uncapped) == 8
    capped, _ = cap_skips(weights, S1, cap=2)
    skips = [i for i, (op, _) in enumerate(capped) if op == SKIP]
    assert len(skips) == 2 and skips == [6, 7]  # node 5 holds the strongest skips


# ---------------------------------------------------------------- encoding, random, mutate
def test_encode_decode_row_layout():
    row = SPACE.encode(GENOTYPE)
    assert row.dtype == np.int64 and row.shape == (SPACE.encoding_length,) == (ROW_WIDTH,)
    assert row[:4].tolist() == [0, S1.index("sep_conv_3x3"), 1, S1.index("sep_conv_3x3")]
    assert row[12:16].tolist() == [0, S1.index("sep_conv_5x5"), 4, S1.index("max_pool_3x3")]
    assert SPACE.decode(row) == GENOTYPE
    assert ((0 <= row) & (row < SPACE.encoding_bounds())).all()
    assert SPACE.encoding_bounds()[:4].tolist() == [2, 8, 2, 8]
    swapped = CellGenotype(normal=(GENOTYPE.normal[1], GENOTYPE.normal[0]) + GENOTYPE.normal[2:],
                           reduce=GENOTYPE.reduce)
    assert swapped == GENOTYPE and np.array_equal(SPACE.encode(swapped), row)  # a node's pairs are unordered
    assert GENOTYPE.reduce[2:4] == (("max_pool_3x3", 1), ("skip_connect", 2))  # stored ordered by input


@pytest.mark.parametrize("entry, value, message", [
    (0, 2, "entry 0 .normal cell, node 2, input_a. = 2"), (1, 0, "not 'none'"),
    (3, 8, "op index in 0..7"), (18, 0, "entry 18 .reduce cell, node 2, input_b. = 0")])
def test_decode_rejects_bad_rows(entry, value, message):
    row = SPACE.encode(GENOTYPE)
    row[entry] = value
    with pytest.raises(GenotypeError, match=message):
        SPACE.decode(row)
    with pytest.raises(GenotypeError, match="32 entries"):
        SPACE.decode(row[:-1])


def test_random_and_mutate_stay_valid():
    rng = np.random.default_rng(0)
    seen_inputs, seen_ops = set(), set()
    for _ in range(200):
        g = SPACE.random(rng)
        row = SPACE.encode(g)
        assert SPACE.decode(row) == g
        child = SPACE.mutate(g, rng)
        child_row = SPACE.encode(child)
        assert SPACE.genotype_from_dict(child.to_dict()) == child
        changed = np.flatnonzero(child_row != row)
        assert changed.size and changed.max() - changed.min() < 4  # one node of one cell
        seen_inputs.add(int(row[8])), seen_ops.add(int(row[1]))
    assert seen_inputs == {0, 1, 2}  # node 4's first input (input_a < input_b <= 3)
    assert seen_ops == set(range(1, 8))  # every non-zero op, never "none"


# ---------------------------------------------------------------- sampling and Eq. 9
def test_samples_are_valid_genotypes_never_zero_and_deterministic():
    probs = _peaked(0)
    a = SPACE.sample(probs, 500, seed=3)
    b = SPACE.sample(probs, 500, seed=3)
    assert np.array_equal(a.archs, b.archs) and np.array_equal(a.counts, b.counts)
    assert not np.array_equal(SPACE.sample(probs, 500, seed=4).archs, a.archs)
    assert a.archs.shape[1] == ROW_WIDTH and a.num_drawn == 500
    for row in a.archs:
        g = SPACE.decode(row)
        assert "none" not in g.ops()
        assert np.array_equal(SPACE.encode(g), row)


def test_sampling_follows_the_tables():
    probs = {k: np.full((14, len(S1)), 1e-3) for k in ("normal", "reduce")}
    for k in probs:
        probs[k][:, S1.index("sep_conv_3x3")] = 1.0
        probs[k][[0, 1, 2, 3, 5, 6, 9, 10], S1.index("sep_conv_3x3")] = 50.0  # inputs 0 and 1 win
    result = SPACE.sample(probs, 300, seed=0)
    mode = SPACE.decode(result.archs[result.counts.argmax()])
    assert mode == derive_genotype(probs["normal"], probs["reduce"], S1)


def test_edge_weights_steer_input_choice():
    probs = {k: np.full((14, len(S1)), 1.0) for k in ("normal", "reduce")}
    edges = {k: np.where(np.arange(14) % 2 == 0, 1.0, 0.0) for k in ("normal", "reduce")}
    edges["normal"][[0, 1]] = 1.0  # node 2 needs two weighted inputs
    edges["reduce"][[0, 1]] = 1.0
    sparse = {f"edges_{k}": np.where(np.arange(14) < 3, 1.0, 0.0) for k in probs}
    with pytest.raises(ValueError, match="node 3: fewer than 2"):
        SPACE.sample({**probs, **sparse}, 10, seed=0)
    tables = {**probs, **{f"edges_{k}": v for k, v in edges.items()}}
    for row in SPACE.sample(tables, 50, seed=0).archs:
        for i, (_, src) in enumerate(SPACE.decode(row).normal):
            assert edges["normal"][edge_index(2 + i // 2, src)] > 0


def test_uniform_tables_and_bad_tables():
    tables = SPACE.uniform_tables()
    assert set(tables) == {"normal", "reduce", "edges_normal", "edges_reduce"}
    assert SPACE.sample(tables, 200, seed=0).num_unique == 200
    with pytest.raises(ValueError, match=r"tables\['reduce'\]: expected shape \(14, 8\)"):
        SPACE.sample({**tables, "reduce": np.ones((14, 3))}, 10, seed=0)
    with pytest.raises(ValueError, match="missing 'normal'"):
        SPACE.score(np.zeros((0, 32), dtype=np.int64), {"reduce": tables["reduce"]})


def test_eq9_score_sums_edge_weight_times_op_probability():
    probs = _peaked(1)
    edges = {f"edges_{k}": np.random.default_rng(2).random(14) + 0.1 for k in ("normal", "reduce")}
    rows = SPACE.sample({**probs, **edges}, 20, seed=0).archs
    expected = []
    for row in rows:
        g = SPACE.decode(row)
        terms = [edges[f"edges_{kind}"][edge_index(2 + i // 2, src)] * probs[kind][edge_index(2 + i // 2, src),
                                                                                   S1.index(op)]
                 for kind in ("normal", "reduce") for i, (op, src) in enumerate(getattr(g, kind))]
        expected.append(terms)
    expected = np.array(expected)
    np.testing.assert_allclose(SPACE.score(rows, {**probs, **edges}), expected.sum(1))
    np.testing.assert_allclose(SPACE.score(rows, {**probs, **edges}, log=True), np.log(expected).sum(1))
    np.testing.assert_allclose(SPACE.score(rows, probs),  # no edge tables: weight 1
                               SPACE.score(rows, {**probs, **{k: np.ones(14) for k in edges}}))


# ---------------------------------------------------------------- final network, cost, render
def test_build_network_and_cost():
    torch.manual_seed(0)
    net = SPACE.build_network(GENOTYPE).eval()
    assert isinstance(net, CellNetwork) and len(net.cells) == 3
    cost = SPACE.cost(GENOTYPE)
    inference = sum(p.numel() for n, p in net.named_parameters() if not n.startswith("auxiliary."))
    assert cost["params"] == inference and cost["latency_ms"] is None
    assert cost["flops"] > 0 and cost == SPACE.cost(GENOTYPE)


def test_flops_grow_with_the_image():
    big = make_space("cell", {"final_cells": 3, "final_channels": 4}, (1, 16, 16), 10)
    assert big.cost(GENOTYPE)["flops"] > 3 * SPACE.cost(GENOTYPE)["flops"]
    assert big.cost(GENOTYPE)["params"] == SPACE.cost(GENOTYPE)["params"]


def test_final_network_is_deeper_and_wider_than_proxy():
    small = CellNetwork(GENOTYPE, 1, 10, channels=4, cells=3)
    big = CellNetwork(GENOTYPE, 1, 10, channels=8, cells=6)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert len(big.cells) == 6 and count(big) > count(small)
    assert [c.reduction for c in big.cells] == [False, False, True, False, True, False]
    big.set_drop_path(0.2)
    assert big.train()(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_render_writes_one_png_with_both_cells(tmp_path):
    path = SPACE.render(GENOTYPE, tmp_path / "genotype.png", "darts")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    single = render_cell(GENOTYPE.normal, GENOTYPE.normal_concat, tmp_path / "normal.png", "normal")
    assert single.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = SPACE.plot_tables(SPACE.uniform_tables(), "uniform")
    assert len(fig.axes) == 4  # two heatmaps and their colour bars


# ---------------------------------------------------------------- search supernet
@pytest.mark.parametrize("k", [1, 2])
def test_supernet_handles_odd_sizes_at_reductions(k):
    torch.manual_seed(0)
    net = SearchNetwork(S1, 1, 10, 4, 3, k=k)  # 14x14 -> 7x7 -> 4x4
    arch = ArchParams(len(S1))
    mixes = [MixWeights(arch.alpha(kind).softmax(-1)) for kind in ("normal", "reduce")]
    assert net(torch.randn(2, 1, 14, 14), *mixes).shape == (2, 10)
    assert CellNetwork(GENOTYPE, 1, 10, 4, 3)(torch.randn(2, 1, 14, 14)).shape == (2, 10)


def test_path_steps_equal_the_one_path_forward_and_run_one_op_per_edge():
    torch.manual_seed(0)
    net = SearchNetwork(S1, 1, 10, 4, 5).eval()  # reductions at cells 1 and 3
    assert isinstance(net, Supernet)
    assert net.path_depth() == 5 and [net.path_prefix(d) for d in range(5)] == [16, 32, 32, 32, 32]
    calls = []
    for m in net.modules():
        if isinstance(m, MixedOp):
            for op in m.ops:
                op.register_forward_hook(lambda *a: calls.append(1))
    rows = net.check_rows(SPACE.sample(_peaked(1), 3, seed=0).archs)
    x = torch.randn(2, 1, 8, 8)
    cpu = torch.device("cpu")
    for row in rows:
        with torch.no_grad():
            _, outs = net(x, path_mix(row[:16], S1, cpu), path_mix(row[16:], S1, cpu), return_cells=True)
            calls.clear()
            state = net.path_begin(x)
            for depth in range(net.path_depth()):
                state, out = net.path_step(depth, state, row)
                assert torch.equal(out, outs[depth])
        assert len(calls) == 14 * 5


def test_path_parameter_names_are_the_rows_ops():
    net = SearchNetwork(S1, 1, 10, 4, 3)
    row = SPACE.encode(GENOTYPE)
    names = net.path_parameter_names(0, row)  # a normal cell
    params = dict(net.named_parameters())
    assert set(names) <= set(params) and set(names) <= set(net.state_dict())
    assert {"cells.0.preprocess0.1.weight", "cells.0.preprocess1.1.weight"} <= set(names)
    sep = f"cells.0.edges.{edge_index(2, 0)}.ops.{S1.index('sep_conv_3x3')}."
    assert {n for n in names if n.startswith(sep)} == {p for p in params if p.startswith(sep)} != set()
    assert not any(f"edges.{edge_index(5, 1)}." in n for n in names)  # not a kept edge
    assert not any(f"edges.{edge_index(3, 0)}.ops" in n for n in names)  # skip_connect: no parameters
    # the reduction cell uses pools and stride-1 skips only: just its preprocessing has parameters
    assert net.path_parameter_names(1, row) == ("cells.1.preprocess0.1.weight", "cells.1.preprocess1.1.weight")


def test_pruned_supernet_maps_ops_onto_its_edges():
    pruned = [("skip_connect", "sep_conv_3x3")] * 14  # P-DARTS kept two ops, no "none"
    cell = (("sep_conv_3x3", 0), ("skip_connect", 1)) * 4
    row = SPACE.encode(CellGenotype(normal=cell, reduce=cell))
    mix = path_mix(row[:16], S1, torch.device("cpu"), pruned)
    assert mix.ops.shape == (14, 2) and float(mix.ops.sum()) == 8.0
    assert mix.index[edge_index(2, 0)] == 1 and mix.index[edge_index(2, 1)] == 0
    assert float(mix.ops[edge_index(5, 4)].sum()) == 0.0
    net = SearchNetwork(S1, 1, 10, 4, 3, edge_ops={"normal": pruned, "reduce": pruned})
    assert np.array_equal(net.check_rows(row[None]), row[None])
    with pytest.raises(ValueError, match=r"row 0, normal cell, edge \(4, 2\): op 'dil_conv_3x3' is not in the "
                                         "supernet there"):
        net.check_rows(SPACE.encode(GENOTYPE)[None])
    with pytest.raises(ValueError, match="not in the supernet"):
        path_mix(row[:16], S1, torch.device("cpu"), [("skip_connect", "max_pool_3x3")] * 14)
