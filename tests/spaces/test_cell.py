"""DARTS cell space: ops, op sets, genotype, derivation rule, rendering,
final network export."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nas_core.spaces.cell import (EDGES, NUM_EDGES, OP_SETS, SKIP, CellGenotype, cap_skips, derive_cell,
                                  derive_genotype, node_edges, op_set, render_cell)
from nas_core.spaces.cell_ops import CELL_OPS, make_op
from nas_core.supernet.cell import CellNetwork, export_network, load_exported

S1 = op_set("darts")
GENOTYPE = CellGenotype(
    normal=(("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 1),
            ("skip_connect", 0), ("dil_conv_3x3", 2), ("sep_conv_5x5", 0), ("max_pool_3x3", 4)),
    reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)))


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


def test_genotype_json_round_trip_and_validation():
    assert CellGenotype.from_json(GENOTYPE.to_json()) == GENOTYPE
    assert GENOTYPE.count(SKIP, "normal") == 2
    bad = GENOTYPE.to_dict()
    bad["normal"][0] = ["none", 0]
    with pytest.raises(ValueError, match="normal cell, node 2: op 'none'"):
        CellGenotype.from_dict(bad)
    bad = GENOTYPE.to_dict()
    bad["reduce"][2] = ["max_pool_3x3", 3]
    with pytest.raises(ValueError, match="reduce cell, node 3: input 3 must be in 0..2"):
        CellGenotype.from_dict(bad)


def test_derivation_keeps_two_strongest_edges_and_never_zero():
    weights = np.full((14, len(S1)), 0.01)
    weights[:, 0] = 0.9  # "none" dominates every edge; it must still be ignored
    for e, (node, src) in enumerate(EDGES):
        weights[e, 4] = 0.1 + 0.01 * src  # sep_conv_3x3: later inputs are stronger
    weights[node_edges(5)[0], 7] = 0.5  # node 5 <- input 0 by dil_conv_5x5, the strongest there
    cell = derive_cell(weights, S1)
    assert all(op != "none" for op, _ in cell)
    assert [src for _, src in cell] == [0, 1, 1, 2, 2, 3, 0, 4]
    assert cell[6] == ("dil_conv_5x5", 0) and cell[7] == ("sep_conv_3x3", 4)


def test_derivation_of_random_weights_is_a_valid_genotype():
    rng = np.random.default_rng(0)
    g = derive_genotype(rng.random((14, 8)), rng.random((14, 8)), S1)
    assert CellGenotype.from_dict(g.to_dict()) == g


def test_skip_cap_replaces_the_weakest_skips():
    weights = np.full((14, len(S1)), 0.05)
    weights[:, S1.index(SKIP)] = np.linspace(0.5, 0.9, 14)  # skip wins everywhere
    weights[:, S1.index("sep_conv_3x3")] = 0.3
    uncapped = derive_cell(weights, S1)
    assert sum(op == SKIP for op, _ in uncapped) == 8
    capped, _ = cap_skips(weights, S1, cap=2)
    skips = [i for i, (op, _) in enumerate(capped) if op == SKIP]
    assert len(skips) == 2 and skips == [6, 7]  # node 5 holds the strongest skips


def test_render_cell_writes_png(tmp_path):
    path = render_cell(GENOTYPE.normal, GENOTYPE.normal_concat, tmp_path / "normal.png", "normal")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_final_network_export_reload_in_one_call(tmp_path):
    torch.manual_seed(0)
    net = CellNetwork(GENOTYPE, input_channels=1, num_classes=10, channels=4, cells=3).eval()
    x = torch.randn(2, 1, 8, 8)
    export_network(net, tmp_path / "final", extra={"val_acc": 0.5})
    loaded = load_exported(tmp_path / "final")
    assert loaded.genotype == GENOTYPE
    assert torch.equal(loaded(x), net(x))
    with pytest.raises(FileNotFoundError, match="network.json"):
        load_exported(tmp_path / "missing")


def test_final_network_is_deeper_and_wider_than_proxy():
    small = CellNetwork(GENOTYPE, 1, 10, channels=4, cells=3)
    big = CellNetwork(GENOTYPE, 1, 10, channels=8, cells=6)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert len(big.cells) == 6 and count(big) > count(small)
    assert [c.reduction for c in big.cells] == [False, False, True, False, True, False]
    big.set_drop_path(0.2)
    assert big.train()(torch.randn(3, 1, 8, 8)).shape == (3, 10)


@pytest.mark.parametrize("k", [1, 2])
def test_supernet_handles_odd_sizes_at_reductions(k):
    from nas_core.supernet.cell import ArchParams, MixWeights, SearchNetwork

    torch.manual_seed(0)
    net = SearchNetwork(1, 10, 4, 3, [S1] * 14, [S1] * 14, k=k)  # 14x14 -> 7x7 -> 4x4
    arch = ArchParams(len(S1))
    mixes = [MixWeights(arch.alpha(kind).softmax(-1)) for kind in ("normal", "reduce")]
    assert net(torch.randn(2, 1, 14, 14), *mixes).shape == (2, 10)
    assert CellNetwork(GENOTYPE, 1, 10, 4, 3)(torch.randn(2, 1, 14, 14)).shape == (2, 10)
