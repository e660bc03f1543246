import numpy as np
import pytest
import torch

from nas_core.dcnas.features import (build_trie, cosine_to_first, extract_output_features,
                                     extract_param_features, plan_chunk_size)
from tests.dcnas.conftest import epoch_states


def test_cosine_to_first_matches_definition_and_zero_vectors():
    out = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0], [-3.0, 0.0]])
    f = cosine_to_first(out)
    assert torch.allclose(f, torch.tensor([1.0, 2 ** -0.5, 0.0, -1.0], dtype=torch.float64))
    zeros = cosine_to_first(torch.zeros(3, 4))
    assert torch.equal(zeros, torch.ones(3, dtype=torch.float64))
    mixed = cosine_to_first(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
    assert mixed.tolist() == [1.0, 0.0]
    batched = cosine_to_first(torch.randn(5, 2, 3, 7))
    assert batched.shape == (5, 2, 3) and not torch.isnan(batched).any()


def test_trie_nodes_count_distinct_prefixes():
    archs = np.array([[0, 1, 2], [0, 1, 0], [1, 1, 2], [0, 2, 2]])
    trie = build_trie(archs)
    assert trie.num_nodes == (2, 3, 4)
    assert trie.archs.tolist() == sorted(archs.tolist())
    assert np.array_equal(trie.archs, archs[trie.order])


def direct_features(model, states, arch, images):
    """Eq. 7 computed by hand for one architecture: forward_path-style
    layer outputs, GAP, mean over images, cosine to the first epoch."""
    per_layer = [[] for _ in arch]
    for state in states:
        model.load_state_dict(state)
        model.eval()
        with torch.no_grad():
            x = model.stem(images)
            for depth, op in enumerate(arch):
                x = model.layers[depth].ops[op](x)
                per_layer[depth].append(x.mean(dim=(2, 3)).mean(0))
    out = np.empty((len(arch), len(states)))
    for depth, vecs in enumerate(per_layer):
        for e, v in enumerate(vecs):
            out[depth, e] = float(torch.dot(vecs[0], v) / (vecs[0].norm() * v.norm()))
    return out


def test_hand_built_case_matches_direct_computation(tiny_supernet, probe_batches):
    states = epoch_states(tiny_supernet, 3)
    archs = np.array([[0, 2, 1, 0], [1, 1, 1, 1]])
    feats = extract_output_features(tiny_supernet, states, archs, probe_batches, torch.device("cpu"))
    assert feats.shape == (2, 4, 3) and feats.dtype == np.float32
    images = torch.cat(probe_batches)
    for row, arch in enumerate(archs.tolist()):
        expected = direct_features(tiny_supernet, states, arch, images)
        assert np.allclose(feats[row], expected, atol=1e-5)
    assert np.allclose(feats[:, :, 0], 1.0)


@pytest.mark.parametrize("bn", ["running", "batch"])
def test_prefix_sharing_equals_naive_path(tiny_supernet, probe_batches, random_archs, bn):
    states = epoch_states(tiny_supernet, 3)
    shuffled = random_archs[np.random.default_rng(3).permutation(len(random_archs))]
    args = (tiny_supernet, states, shuffled, probe_batches, torch.device("cpu"), bn)
    trie = extract_output_features(*args, method="trie")
    naive = extract_output_features(*args, method="naive")
    assert np.isfinite(trie).all()
    np.testing.assert_allclose(trie, naive, atol=1e-6)
    assert trie.std() > 0  # the features actually differ between architectures


def test_batch_statistics_differ_from_running(tiny_supernet, probe_batches, random_archs):
    states = epoch_states(tiny_supernet, 2)
    run = extract_output_features(tiny_supernet, states, random_archs, probe_batches, torch.device("cpu"), "running")
    bat = extract_output_features(tiny_supernet, states, random_archs, probe_batches, torch.device("cpu"), "batch")
    assert not np.allclose(run, bat)


def test_bad_architectures_are_named(tiny_supernet, probe_batches):
    states = epoch_states(tiny_supernet, 2)
    with pytest.raises(ValueError, match="layer 1: op index 7"):
        extract_output_features(tiny_supernet, states, np.array([[0, 7, 0, 0]]), probe_batches, torch.device("cpu"))
    with pytest.raises(ValueError, match="3 layers but the supernet has 4"):
        extract_output_features(tiny_supernet, states, np.array([[0, 1, 0]]), probe_batches, torch.device("cpu"))


def test_param_features_eq6_and_skip_is_one(tiny_supernet):
    states = epoch_states(tiny_supernet, 3)
    archs = np.array([[2, 2, 2, 2], [0, 1, 0, 1]])
    feats = extract_param_features(tiny_supernet, states, archs)
    assert feats.shape == (2, 4, 3)
    assert np.array_equal(feats[0], np.ones((4, 3), dtype=np.float32))  # skip: parameter-free
    key = "layers.1.ops.1.0.weight"
    w1, w3 = states[0][key].flatten(), states[2][key].flatten()
    bn_w1, bn_w3 = states[0]["layers.1.ops.1.1.weight"], states[2]["layers.1.ops.1.1.weight"]
    bn_b1, bn_b3 = states[0]["layers.1.ops.1.1.bias"], states[2]["layers.1.ops.1.1.bias"]
    a, b = torch.cat([w1, bn_w1, bn_b1]), torch.cat([w3, bn_w3, bn_b3])
    assert feats[1, 1, 2] == pytest.approx(float(a @ b / (a.norm() * b.norm())), abs=1e-6)


def test_chunk_size_follows_memory_budget(tiny_supernet):
    small = plan_chunk_size(tiny_supernet, (1, 6, 6), torch.device("cpu"), memory_mb=16, max_batch=10**9)
    big = plan_chunk_size(tiny_supernet, (1, 6, 6), torch.device("cpu"), memory_mb=64, max_batch=10**9)
    assert 1 <= small < big
    assert plan_chunk_size(tiny_supernet, (1, 6, 6), torch.device("cpu"), memory_mb=64, max_batch=32) == 32


def test_real_layerwise_supernet_trie_equals_naive():
    from nas_core.dcnas.sample import sample_architectures
    from nas_core.spaces import make_space
    from nas_core.supernet.layerwise import LayerwiseSupernet

    space = make_space("fbnet", "digits", (1, 8, 8), 10)
    torch.manual_seed(0)
    net = LayerwiseSupernet(space)
    states = epoch_states(net, 2)
    archs = sample_architectures(np.full((space.num_layers, space.num_ops), 1.0), 12, seed=0).archs
    probe = [torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))]
    trie = extract_output_features(net, states, archs, probe, torch.device("cpu"), method="trie")
    naive = extract_output_features(net, states, archs, probe, torch.device("cpu"), method="naive")
    assert trie.shape == (len(archs), space.num_layers, 2)
    np.testing.assert_allclose(trie, naive, atol=1e-6)
