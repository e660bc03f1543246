"""DC-NAS features (Eq. 6, Eq. 7) against the Supernet protocol, on a tiny
fake supernet (tests/dcnas/conftest.py)."""
import numpy as np
import pytest
import torch

from nas_core.dcnas.features import (
    build_trie,
    cosine_to_first,
    extract_output_features,
    extract_param_features,
    loaded_epochs,
    path_prefixes,
    plan_chunk_size,
    threads_for_chunk,
)
from tests.dcnas.conftest import FakeSupernet, epoch_states

CPU = torch.device("cpu")


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
    trie = build_trie(archs, [1, 2, 3])
    assert trie.num_nodes == (2, 3, 4) and trie.total_nodes == 9 and trie.naive_nodes == 12
    assert trie.rows.tolist() == sorted(archs.tolist())
    assert np.array_equal(trie.rows, archs[trie.order])


def test_trie_with_wider_prefixes_groups_by_leading_entries():
    archs = np.array([[0, 1, 2, 0], [0, 1, 0, 1], [1, 1, 2, 2], [0, 1, 2, 2], [0, 2, 0, 0]])
    trie = build_trie(archs, [2, 2, 4])  # e.g. two cells on the first half, one on all entries
    assert trie.num_nodes == (3, 3, 5)
    for depth, prefix in enumerate(trie.prefixes):
        distinct = {tuple(r[:prefix]) for r in trie.rows.tolist()}
        assert len(distinct) == trie.num_nodes[depth]
        for j in range(len(archs)):  # same node id <=> same prefix
            same = trie.node_ids[:, depth] == trie.node_ids[j, depth]
            assert (trie.rows[same, :prefix] == trie.rows[j, :prefix]).all()
    assert build_trie(archs, [0, 4]).num_nodes == (1, 5)


@pytest.mark.parametrize("prefixes, message", [([2, 1], "non-decreasing"), ([1, 5], "outside 0..4"),
                                               ([], "at least one layer")])
def test_bad_prefixes_are_named(prefixes, message):
    with pytest.raises(ValueError, match=message):
        build_trie(np.zeros((2, 4), dtype=np.int64), prefixes)


def direct_features(model, states, arch, images):
    """Eq. 7 computed by hand for one architecture: the fake's layers run
    one after another, GAP, mean over images, cosine to the first epoch."""
    per_layer = [[] for _ in range(model.path_depth())]
    for state in states:
        model.load_state_dict(state)
        model.eval()
        with torch.no_grad():
            x = model.stem(images)
            for depth, uses in enumerate(model.uses):
                x = sum(model.layers[depth][str(j)][arch[j]](x) for j in uses)
                per_layer[depth].append(x.mean(dim=(2, 3)).mean(0))
    out = np.empty((len(per_layer), len(states)))
    for depth, vecs in enumerate(per_layer):
        for e, v in enumerate(vecs):
            out[depth, e] = float(torch.dot(vecs[0], v) / (vecs[0].norm() * v.norm()))
    return out


def test_hand_built_case_matches_direct_computation(fake_supernet, probe_batches):
    states = epoch_states(fake_supernet, 3)
    archs = np.array([[0, 2, 1, 0], [1, 1, 1, 1]])
    feats = extract_output_features(loaded_epochs(fake_supernet, states), archs, probe_batches, CPU)
    assert feats.shape == (2, 4, 3) and feats.dtype == np.float32
    images = torch.cat(probe_batches)
    for row, arch in enumerate(archs.tolist()):
        expected = direct_features(fake_supernet, states, arch, images)
        assert np.allclose(feats[row], expected, atol=1e-5)
    assert np.allclose(feats[:, :, 0], 1.0)


@pytest.mark.parametrize("bn", ["running", "batch"])
@pytest.mark.parametrize("space", ["fake_supernet", "cell_like_supernet"])
def test_prefix_sharing_equals_naive_path(space, bn, probe_batches, random_archs, request):
    net: FakeSupernet = request.getfixturevalue(space)
    states = epoch_states(net, 3)
    shuffled = random_archs[np.random.default_rng(3).permutation(len(random_archs))]
    trie = extract_output_features(loaded_epochs(net, states), shuffled, probe_batches, CPU, bn, method="trie")
    naive = extract_output_features(loaded_epochs(net, states), shuffled, probe_batches, CPU, bn, method="naive")
    assert np.isfinite(trie).all()
    np.testing.assert_allclose(trie, naive, atol=1e-6)
    assert trie.std() > 0  # the features actually differ between architectures


@pytest.mark.parametrize("space, nodes", [("fake_supernet", (3, 9, 22, 33)), ("cell_like_supernet", (9, 9, 33, 33))])
def test_each_trie_node_runs_once_per_chunk_and_epoch(space, nodes, probe_batches, random_archs, request):
    net: FakeSupernet = request.getfixturevalue(space)
    states = epoch_states(net, 2)
    trie = build_trie(random_archs, path_prefixes(net))
    assert trie.num_nodes == nodes
    chunks, epochs = len(probe_batches), len(states)
    extract_output_features(loaded_epochs(net, states), random_archs, probe_batches, CPU)
    assert net.steps == trie.total_nodes * chunks * epochs
    net.steps = 0
    extract_output_features(loaded_epochs(net, states), random_archs, probe_batches, CPU, method="naive")
    assert net.steps == random_archs.size * chunks * epochs == trie.naive_nodes * chunks * epochs


def test_batch_statistics_differ_from_running(fake_supernet, probe_batches, random_archs):
    states = epoch_states(fake_supernet, 2)
    run = extract_output_features(loaded_epochs(fake_supernet, states), random_archs, probe_batches, CPU, "running")
    bat = extract_output_features(loaded_epochs(fake_supernet, states), random_archs, probe_batches, CPU, "batch")
    assert not np.allclose(run, bat)


def test_bad_input_is_named(fake_supernet, probe_batches):
    states = epoch_states(fake_supernet, 2)
    with pytest.raises(ValueError, match="row 0, entry 1: value 7 outside 0..2"):
        extract_output_features(loaded_epochs(fake_supernet, states), np.array([[0, 7, 0, 0]]), probe_batches, CPU)
    with pytest.raises(ValueError, match=r"expected shape \(n, 4\)"):
        extract_param_features(loaded_epochs(fake_supernet, states), np.array([[0, 1, 0]]))
    with pytest.raises(ValueError, match="non-empty"):
        extract_output_features(loaded_epochs(fake_supernet, states), np.zeros((0, 4)), probe_batches, CPU)
    with pytest.raises(ValueError, match="no checkpoints"):
        extract_output_features([], np.zeros((1, 4), dtype=np.int64), probe_batches, CPU)
    with pytest.raises(ValueError, match="probe set is empty"):
        extract_output_features(loaded_epochs(fake_supernet, states), np.zeros((1, 4), dtype=np.int64), [], CPU)
    with pytest.raises(ValueError, match="bn = 'eval'"):
        extract_output_features(loaded_epochs(fake_supernet, states), np.zeros((1, 4), dtype=np.int64),
                                probe_batches, CPU, bn="eval")


def test_param_features_eq6_and_skip_is_one(fake_supernet):
    states = epoch_states(fake_supernet, 3)
    archs = np.array([[2, 2, 2, 2], [0, 1, 0, 1]])
    feats = extract_param_features(loaded_epochs(fake_supernet, states), archs)
    assert feats.shape == (2, 4, 3) and feats.dtype == np.float32
    assert np.array_equal(feats[0], np.ones((4, 3), dtype=np.float32))  # skip: parameter-free
    prefix = "layers.1.1.1."  # layer 1, entry 1, choice 1 (k1): conv weight, BN weight and bias
    a, b = (torch.cat([s[prefix + k].flatten() for k in ("0.weight", "1.weight", "1.bias")]) for s in
            (states[0], states[2]))
    assert feats[1, 1, 2] == pytest.approx(float(a @ b / (a.norm() * b.norm())), abs=1e-6)


def test_param_features_name_each_trie_node_once_and_concatenate(cell_like_supernet, random_archs):
    net = cell_like_supernet
    states = epoch_states(net, 3)
    feats = extract_param_features(loaded_epochs(net, states), random_archs)
    assert net.name_calls == build_trie(random_archs, path_prefixes(net)).total_nodes  # first epoch only
    for row, arch in enumerate(random_archs[:5]):
        for depth in range(net.path_depth()):
            names = net.path_parameter_names(depth, arch)
            if not names:
                assert (feats[row, depth] == 1).all()
                continue
            first, last = (torch.cat([s[n].flatten().double() for n in names]) for s in (states[0], states[2]))
            expected = float(first @ last / (first.norm() * last.norm()))
            assert feats[row, depth, 2] == pytest.approx(expected, abs=1e-6)
    assert (feats[:, :, 0] == 1).all() and feats.std() > 0


def test_param_features_name_missing_keys(fake_supernet):
    class Renamed(FakeSupernet):
        def path_parameter_names(self, depth, row):
            return ("layers.9.gone",)

    torch.manual_seed(0)
    net = Renamed()
    with pytest.raises(ValueError, match="'layers.9.gone', which is not in the supernet's state_dict"):
        extract_param_features(loaded_epochs(net, epoch_states(net, 2)), np.zeros((1, 4), dtype=np.int64))


def test_chunk_size_follows_memory_budget(fake_supernet):
    rows = np.zeros((1, 4), dtype=np.int64)
    small = plan_chunk_size(fake_supernet, rows, (1, 6, 6), CPU, memory_mb=16, max_batch=10**9)
    big = plan_chunk_size(fake_supernet, rows, (1, 6, 6), CPU, memory_mb=64, max_batch=10**9)
    assert 1 <= small < big
    per_image = 5 * 4 * 36 * 4 + 16 * 4 * 36 * 4  # stem + 4 layer states (4 ch, 6x6 float32) + internals
    assert big == 64 * 2**20 // per_image
    assert plan_chunk_size(fake_supernet, rows, (1, 6, 6), CPU, memory_mb=64, max_batch=32) == 32
    assert plan_chunk_size(fake_supernet, rows, (1, 512, 512), CPU, memory_mb=1, max_batch=32) == 1
    assert threads_for_chunk(fake_supernet, rows, (1, 6, 6), CPU, chunk=64, available=2) == 1
    assert threads_for_chunk(fake_supernet, rows, (1, 6, 6), CPU, chunk=10**5, available=2) == 2
