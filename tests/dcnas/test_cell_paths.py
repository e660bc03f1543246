"""DC-NAS on the cell space: sampling genotypes from cell probability
tables, and per-cell Eq. 7 features through the search supernet."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nas_core.dcnas.cell_paths import (ROW_WIDTH, cell_output_features, genotype_to_row, path_mix,
                                       row_to_genotype, sample_cell_archs)
from nas_core.spaces.cell import CellGenotype, derive_genotype, edge_index, op_set
from nas_core.supernet.cell import MixedOp, SearchNetwork

OPS = op_set("darts")


def _peaked(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.dirichlet(np.full(len(OPS), 0.3), size=14) for k in ("normal", "reduce")}


def test_samples_are_valid_genotypes_never_zero_and_deterministic():
    probs = _peaked(0)
    a = sample_cell_archs(probs, OPS, 500, seed=3)
    b = sample_cell_archs(probs, OPS, 500, seed=3)
    assert np.array_equal(a.archs, b.archs) and np.array_equal(a.counts, b.counts)
    assert a.archs.shape[1] == ROW_WIDTH and a.num_drawn == 500
    for row in a.archs:
        g = row_to_genotype(row, OPS)
        assert "none" not in {op for op, _ in g.normal + g.reduce}
        assert np.array_equal(genotype_to_row(g, OPS), row)


def test_sampling_follows_the_tables():
    probs = {k: np.full((14, len(OPS)), 1e-3) for k in ("normal", "reduce")}
    for k in probs:
        probs[k][:, OPS.index("sep_conv_3x3")] = 1.0
        probs[k][[0, 1, 2, 3, 5, 6, 9, 10], OPS.index("sep_conv_3x3")] = 50.0  # inputs 0 and 1 win
    result = sample_cell_archs(probs, OPS, 300, seed=0)
    mode = row_to_genotype(result.archs[result.counts.argmax()], OPS)
    assert mode == derive_genotype(probs["normal"], probs["reduce"], OPS)


def test_edge_weights_steer_input_choice():
    probs = {k: np.full((14, len(OPS)), 1.0) for k in ("normal", "reduce")}
    edges = {k: np.where(np.arange(14) % 2 == 0, 1.0, 0.0) for k in ("normal", "reduce")}
    edges["normal"][[0, 1]] = 1.0  # node 2 needs two weighted inputs
    edges["reduce"][[0, 1]] = 1.0
    with pytest.raises(ValueError, match="node 3: fewer than 2"):
        sample_cell_archs(probs, OPS, 10, seed=0, edge_weights={k: np.where(np.arange(14) < 3, 1.0, 0.0)
                                                                   for k in probs})
    result = sample_cell_archs(probs, OPS, 50, seed=0, edge_weights=edges)
    for row in result.archs:
        g = row_to_genotype(row, OPS)
        for i, (_, src) in enumerate(g.normal):
            assert edges["normal"][edge_index(2 + i // 2, src)] > 0


def test_path_mix_runs_one_op_per_edge_and_features_shape():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = SearchNetwork(1, 10, 4, 3, [OPS] * 14, [OPS] * 14)
    calls = []
    for m in net.modules():
        if isinstance(m, MixedOp):
            for op in m.ops:
                op.register_forward_hook(lambda *a: calls.append(1))
    archs = sample_cell_archs(_peaked(1), OPS, 3, seed=0).archs
    half = ROW_WIDTH // 2
    net(torch.randn(2, 1, 8, 8), path_mix(archs[0][:half], OPS, torch.device("cpu")),
        path_mix(archs[0][half:], OPS, torch.device("cpu")))
    assert len(calls) == 14 * 3
    states = []
    for step in range(3):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.1 * step * torch.randn_like(p))
        states.append({k: v.clone() for k, v in net.state_dict().items()})
    probe = [(torch.randn(4, 1, 8, 8), torch.zeros(4))]
    feats = cell_output_features(net, states, archs, OPS, probe, torch.device("cpu"))
    assert feats.shape == (len(archs), 3, 3)
    np.testing.assert_allclose(feats[:, :, 0], 1.0, atol=1e-6)
    assert (feats[:, :, 2] < 1.0).all()


def test_path_mix_maps_ops_onto_pruned_edges():
    pruned = [("skip_connect", "sep_conv_3x3")] * 14  # P-DARTS kept two ops, no "none"
    cell = (("sep_conv_3x3", 0), ("skip_connect", 1)) * 4
    row = genotype_to_row(CellGenotype(normal=cell, reduce=cell), OPS)
    mix = path_mix(row[:ROW_WIDTH // 2], OPS, torch.device("cpu"), pruned)
    assert mix.ops.shape == (14, 2) and float(mix.ops.sum()) == 8.0
    assert mix.index[edge_index(2, 0)] == 1 and mix.index[edge_index(2, 1)] == 0
    assert float(mix.ops[edge_index(5, 4)].sum()) == 0.0
    with pytest.raises(ValueError, match="not in the supernet"):
        path_mix(row[:ROW_WIDTH // 2], OPS, torch.device("cpu"), [("skip_connect", "max_pool_3x3")] * 14)
