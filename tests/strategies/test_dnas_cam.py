"""DNAS-CAM and its global cell space on a tiny proxy and real 8x8 digits.
Training, bit-identical resume and the DC-NAS chain run for it in
tests/contracts/test_strategies.py; the space's protocol checks in
tests/contracts/test_spaces.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch.utils.data import TensorDataset

from nas_core.spaces import GenotypeError, make_space
from nas_core.spaces.cell import EDGES, NUM_INPUTS, SKIP, derive_cell, edge_index
from nas_core.strategies import StrategyError, create_strategy
from nas_core.supernet.cell import MixedOp
from nas_core.supernet.global_cell import CamArchParams, zero_one_loss
from tests.train.one_thread import one_thread  # noqa: F401

L, C = 4, len(EDGES)


def tiny_space(cells: int = L):
    return make_space("global_cell", {"cells": cells, "final_channels": 8, "auxiliary_weight": 0.0}, (1, 8, 8), 10)


def make(**overrides):
    params = {"epochs": 1, "init_channels": 4, "batch_size": 20, "pc_k": 2, **overrides}
    strategy = create_strategy("dnas_cam", tiny_space(), params, "cpu", seed=0)
    strategy.setup(None)
    return strategy


@pytest.fixture(scope="module")
def trained():
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x[:60] / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    y = torch.tensor(y[:60])
    strategy = create_strategy("dnas_cam", tiny_space(), {"epochs": 1, "init_channels": 4, "batch_size": 20,
                                                           "pc_k": 2}, "cpu", seed=0)
    data = strategy.search_data(TensorDataset(x[:40], y[:40]), TensorDataset(x[40:], y[40:]),
                                TensorDataset(x[40:], y[40:]))
    return strategy, strategy.run(data)


@pytest.mark.parametrize("parameterisation, count", [("cam", lambda n: L * C + L * n + C * n),
                                                      ("full", lambda n: L * C * n), ("iam", lambda n: C * n)])
def test_architecture_parameter_count_is_the_papers(parameterisation, count):
    strategy = make(parameterisation=parameterisation)
    n_ops = len(strategy.op_names)
    assert sum(p.numel() for p in strategy.arch.parameters()) == count(n_ops)
    assert tuple(strategy.arch.psi().shape) == (L, C, n_ops)
    arch = {id(p) for p in strategy.arch.parameters()}
    assert not arch & {id(p) for p in strategy.supernet.parameters()}


def test_psi_is_eq4_and_reduces_to_one_shared_table_when_beta_and_gamma_are_constant():
    arch = CamArchParams(L, 8, "cam")
    torch.manual_seed(1)
    with torch.no_grad():
        arch.alpha.normal_()
        arch.beta.normal_()
        arch.gamma.normal_()
        k, i, j = 2, 5, 3
        expected = (torch.sigmoid(arch.alpha[i, j]) * torch.softmax(arch.beta[k], 0)[i]
                    * torch.sigmoid(arch.gamma[k, j]))
        assert torch.allclose(arch.psi()[k, i, j], expected)
        arch.beta.fill_(0.7)
        arch.gamma.fill_(-0.3)
        psi = arch.psi()
        shared = torch.sigmoid(arch.alpha) / C * torch.sigmoid(torch.tensor(-0.3))
        for k in range(L):
            assert torch.allclose(psi[k], shared)
    iam = CamArchParams(L, 8, "iam")
    iam.load_state_dict({"alpha": arch.alpha.detach()})
    ratio = psi / iam.psi().detach()
    assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio))  # CAM = IAM up to one constant


def test_constant_beta_gamma_derive_darts_cell_everywhere_and_per_layer_gamma_makes_cells_differ():
    strategy = make()
    ops = strategy.op_names
    with torch.no_grad():
        strategy.arch.beta.zero_()
        strategy.arch.gamma.zero_()
    genotype = strategy.genotype()
    darts_cell = derive_cell(torch.sigmoid(strategy.arch.alpha).detach().numpy(), ops)
    assert genotype.cells == (darts_cell,) * L  # IAM: DARTS's rule on the one table, stacked
    with torch.no_grad():  # layer 0 prefers sep_conv_3x3, the last layers skip_connect
        strategy.arch.gamma[0, ops.index("sep_conv_3x3")] = 8.0
        strategy.arch.gamma[L - 1, ops.index(SKIP)] = 8.0
    genotype = strategy.genotype()
    assert all(op == "sep_conv_3x3" for op, _ in genotype.cells[0])
    assert all(op == SKIP for op, _ in genotype.cells[L - 1])
    assert genotype.count(SKIP) >= 8 and len(set(genotype.cells)) >= 2


def test_derived_genotype_round_trips_through_the_space_and_builds(trained, tmp_path):
    strategy, result = trained
    space, genotype = strategy.space, result.genotype
    assert genotype.num_cells == L == strategy.supernet.path_depth()
    assert space.genotype_from_dict(genotype.to_dict()) == genotype
    assert space.decode(space.encode(genotype)) == genotype
    with torch.no_grad():
        assert space.build_network(genotype).eval()(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert space.render(genotype, tmp_path / "stack.png").read_bytes()[:4] == b"\x89PNG"
    for key in ("distinct_cells", "skip_shallow", "skip_deep", "zero_one"):
        assert np.isfinite(result.history[-1][key])
    assert strategy.arrays()["psi"].shape == (L, len(EDGES), len(strategy.op_names))
    assert {"tables.png", "ops_by_depth.png"} <= set(strategy.figures(result))


def test_eq9_scores_a_genotype_with_the_psi_of_its_kept_edges(trained):
    strategy, result = trained
    psi, genotype = strategy.psi(), result.genotype
    kept = sum(psi[k, edge_index(NUM_INPUTS + i // 2, src), strategy.op_names.index(op)]
               for k, cell in enumerate(genotype.cells) for i, (op, src) in enumerate(cell))
    score = strategy.space.score(strategy.space.encode(genotype)[None], result.tables)
    assert score[0] == pytest.approx(kept)


def test_skip_dropout_partial_channels_and_zero_one_loss_are_in_the_search():
    strategy = make(skip_dropout=0.2, pc_k=2)
    mixed = [m for m in strategy.supernet.modules() if isinstance(m, MixedOp)]
    assert mixed and all(m.skip_dropout == 0.2 and m.k == 2 for m in mixed)
    assert float(zero_one_loss([torch.tensor([0.0, 1.0])])) == pytest.approx(-0.25)
    assert float(zero_one_loss([torch.tensor([0.5, 0.5])])) == 0.0
    strategy.supernet.eval()  # no dropout noise: two forwards agree
    with torch.no_grad():
        strategy.arch.alpha.normal_(0, 2)
        strategy.arch.gamma.normal_(0, 2)
        x, y = torch.rand(4, 1, 8, 8), torch.arange(4)
        arch_loss = float(strategy._loss(x, y)[0])
        weight_loss = float(strategy._loss(x, y, detach_arch=True)[0])  # the weight step: cross-entropy only
        zero_one = float(zero_one_loss(strategy.arch.sigmoids()))
    assert zero_one < -0.05
    assert arch_loss - weight_loss == pytest.approx(10.0 * zero_one, rel=1e-4)


def test_bad_settings_and_genotypes_are_named():
    with pytest.raises(StrategyError, match="strategies.dnas_cam.pc_k"):
        create_strategy("dnas_cam", tiny_space(), {"init_channels": 6, "pc_k": 4})
    with pytest.raises(StrategyError, match="strategies.dnas_cam.parameterisation"):
        create_strategy("dnas_cam", tiny_space(), {"parameterisation": "tied"})
    with pytest.raises(StrategyError, match="search.space"):
        create_strategy("dnas_cam", make_space("cell", None, (1, 8, 8), 10))
    space = tiny_space()
    data = space.random(np.random.default_rng(0)).to_dict()
    with pytest.raises(GenotypeError, match="3 cells.*cells = 4"):
        space.genotype_from_dict({**data, "cells": data["cells"][:3]})
    data["cells"][2][1][0] = "sep_conv_9x9"
    with pytest.raises(GenotypeError, match="cell 2, node 2.*sep_conv_9x9"):
        space.genotype_from_dict(data)
    tables = space.uniform_tables()
    with pytest.raises(ValueError, match="missing 'cell_1'"):
        space.sample({k: v for k, v in tables.items() if k != "cell_1"}, 5, seed=0)
    row = space.encode(space.random(np.random.default_rng(0)))
    row[16 + 1] = 0  # cell 1, node 2, op_a = none
    with pytest.raises(ValueError, match=r"entry 17 \(cell 1, node 2, op_a\)"):
        space.score(row[None], tables)


def test_mutate_changes_exactly_one_cell():
    space, rng = tiny_space(), np.random.default_rng(4)
    for _ in range(10):
        g = space.random(rng)
        child = space.mutate(g, rng)
        assert sum(a != b for a, b in zip(g.cells, child.cells)) == 1
