"""DC-NAS features on the real supernets: the layer-wise supernet (same
numbers as before the Supernet protocol) and the cell search network
(prefix sharing equals the naive path).

``layerwise_reference.npz`` was computed with the layer-wise-only
``extract_output_features`` / ``extract_param_features`` of commit 0f1dae2
(before issue 11) on ``LayerwiseSupernet`` of the digits preset, with the
weights of :func:`keyed_states` (3 epochs) and the probe below: ``rows``
(15, 6), ``output_running`` / ``output_batch`` (Eq. 7, 15 x 6 x 3) and
``params`` (Eq. 6)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from nas_core.dcnas.features import (
    build_trie,
    extract_output_features,
    extract_param_features,
    loaded_epochs,
    path_prefixes,
    plan_chunk_size,
)
from tests.dcnas.conftest import keyed_states

CPU = torch.device("cpu")
REFERENCE = Path(__file__).with_name("layerwise_reference.npz")


def digits_probe(n: int = 20, chunk: int = 8) -> list[torch.Tensor]:
    x = load_digits().images[:n].astype(np.float32) / 16.0
    return list(torch.from_numpy((x - 0.3) / 0.4).unsqueeze(1).split(chunk))


@pytest.fixture(scope="module")
def layerwise():
    from nas_core.spaces import make_space
    from nas_core.supernet.layerwise import LayerwiseSupernet

    space = make_space("layerwise", {"preset": "digits"}, (1, 8, 8), 10)
    torch.manual_seed(0)
    net = LayerwiseSupernet(space)
    return net, keyed_states(net, 3)


@pytest.fixture(scope="module")
def cell():
    from nas_core.spaces import make_space
    from nas_core.strategies import create_strategy

    space = make_space("cell", None, (1, 8, 8), 10)
    strategy = create_strategy("darts", space, {"epochs": 1, "init_channels": 4, "cells": 5}, CPU)
    strategy.setup(None)
    states = keyed_states(strategy.supernet, 2)
    sampled = space.sample(space.uniform_tables(), 50, seed=0).archs
    half = space.encoding_length // 2
    rows = np.array([np.r_[n[:half], r[half:]] for n in sampled[:2] for r in sampled[2:5]])
    return space, strategy, states, rows


@pytest.mark.parametrize("bn", ["running", "batch"])
@pytest.mark.parametrize("method", ["trie", "naive"])
def test_layerwise_eq7_equals_pre_protocol_numbers(layerwise, bn, method):
    net, states = layerwise
    ref = np.load(REFERENCE)
    feats = extract_output_features(loaded_epochs(net, states), ref["rows"], digits_probe(), CPU, bn, method)
    assert feats.shape == (15, 6, 3)
    np.testing.assert_allclose(feats, ref[f"output_{bn}"], rtol=0, atol=1e-6)


def test_layerwise_eq6_equals_pre_protocol_numbers(layerwise):
    net, states = layerwise
    ref = np.load(REFERENCE)
    feats = extract_param_features(loaded_epochs(net, states), ref["rows"])
    np.testing.assert_allclose(feats, ref["params"], rtol=0, atol=1e-6)


def test_layerwise_trie_is_the_per_layer_trie(layerwise):
    net, _ = layerwise
    rows = np.load(REFERENCE)["rows"]
    assert path_prefixes(net) == [1, 2, 3, 4, 5, 6]
    assert build_trie(rows, path_prefixes(net)).num_nodes == (6, 13, 14, 14, 14, 15)
    assert plan_chunk_size(net, rows, (1, 8, 8), CPU, memory_mb=64, max_batch=10**9) == 1579


def test_cell_prefixes_share_the_normal_half(cell):
    space, strategy, _, rows = cell
    net = strategy.supernet
    half = space.encoding_length // 2
    prefixes = path_prefixes(net)
    assert len(prefixes) == 5
    assert prefixes == [half, 2 * half, 2 * half, 2 * half, 2 * half]  # reductions at cells 1 and 3
    trie = build_trie(net.check_rows(rows), prefixes)
    assert trie.num_nodes[0] == len({tuple(r[:half]) for r in rows.tolist()}) == 2


@pytest.mark.parametrize("bn", ["running", "batch"])
def test_cell_trie_equals_naive(cell, bn):
    _, strategy, states, rows = cell
    net = strategy.supernet
    probe = digits_probe(12, 6)
    trie = extract_output_features(loaded_epochs(net, states), rows, probe, CPU, bn, "trie")
    naive = extract_output_features(loaded_epochs(net, states), rows, probe, CPU, bn, "naive")
    assert trie.shape == (len(rows), 5, 2)
    np.testing.assert_allclose(trie, naive, rtol=0, atol=1e-6)
    np.testing.assert_allclose(trie[:, :, 0], 1.0, atol=1e-6)
    assert (trie[:, :, 1] < 1.0).all()


def test_cell_features_through_the_strategy_checkpoints(cell):
    """What the dcnas_features stage does: load checkpoints through
    ``strategy.load_supernet``."""
    space, strategy, states, rows = cell
    checkpoints = [{"supernet": s} for s in states]
    feats = extract_output_features((strategy.load_supernet(c) for c in checkpoints), rows, digits_probe(6, 6), CPU)
    params = extract_param_features((strategy.load_supernet(c) for c in checkpoints), rows)
    assert feats.shape == params.shape == (len(rows), 5, 2)
    assert (params[:, :, 0] == 1).all() and (params[:, :, 1] < 1).any()
    half = space.encoding_length // 2
    same_normal = [i for i in range(len(rows)) if (rows[i, :half] == rows[0, :half]).all()]
    assert len(same_normal) == 3
    assert (params[same_normal, 0] == params[0, 0]).all()  # the first (normal) cell uses the same parameters
    assert (feats[same_normal, 0] == feats[0, 0]).all()
