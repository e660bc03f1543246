"""LayerwiseSupernet: mixture forward, single-path forward, theta, and the
Supernet protocol DC-NAS uses."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nas_core.spaces import make_space
from nas_core.supernet import LayerwiseSupernet
from nas_core.supernet.base import Supernet


@pytest.fixture(scope="module")
def net() -> LayerwiseSupernet:
    torch.manual_seed(0)
    return LayerwiseSupernet(make_space("layerwise", {"preset": "digits"}, (1, 8, 8), 10)).eval()


def test_shapes_and_uniform_start(net: LayerwiseSupernet) -> None:
    x = torch.randn(3, 1, 8, 8)
    space = net.space
    assert net(x, temperature=5.0).shape == (3, 10)
    assert net.theta.shape == (space.num_layers, space.num_ops)
    assert torch.allclose(net.probabilities(), torch.full_like(net.theta, 1 / space.num_ops))
    assert len(net.layers) == space.num_layers and all(len(layer.ops) == space.num_ops for layer in net.layers)


def test_one_hot_mixture_equals_the_single_path(net: LayerwiseSupernet) -> None:
    x = torch.randn(2, 1, 8, 8)
    path = [0, 8, 3, 1, 7, 5]
    mask = torch.nn.functional.one_hot(torch.tensor(path), net.space.num_ops).float()
    with torch.no_grad():
        assert torch.allclose(net.forward_weighted(x, mask), net.forward_path(x, path), atol=1e-6)


def test_layer_op_is_candidate_i(net: LayerwiseSupernet) -> None:
    h = net.stem(torch.randn(1, 1, 8, 8))
    skip = net.space.op_names.index("skip")
    assert torch.equal(net.layers[0].ops[skip](h), h)  # layer 0 keeps its shape: identity


def test_hard_sampling_is_one_hot_with_gradients(net: LayerwiseSupernet) -> None:
    mask = net.sample_mask(1.0, hard=True)
    assert torch.equal(mask.sum(1), torch.ones(net.space.num_layers)) and set(mask.unique().tolist()) <= {0.0, 1.0}
    net(torch.randn(2, 1, 8, 8), 1.0, hard=True).sum().backward()
    assert net.theta.grad is not None and net.theta.grad.abs().sum() > 0
    net.zero_grad(set_to_none=True)


def test_weight_parameters_exclude_theta(net: LayerwiseSupernet) -> None:
    ids = {id(p) for p in net.weight_parameters()}
    assert id(net.theta) not in ids and len(ids) == len(list(net.parameters())) - 1


@pytest.mark.parametrize("path, message", [([0] * 5, "has 5 op indices"), ([0, 0, 0, 0, 0, 9], r"out of range 0\.\.8")])
def test_bad_paths_are_clear_errors(net: LayerwiseSupernet, path: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        net.forward_path(torch.randn(1, 1, 8, 8), path)


def test_path_protocol_gives_the_single_path_logits(net: LayerwiseSupernet) -> None:
    assert isinstance(net, Supernet)
    x, row = torch.randn(2, 1, 8, 8), np.array([0, 8, 3, 1, 7, 5], dtype=np.int8)
    assert net.path_depth() == 6 and [net.path_prefix(d) for d in range(6)] == [1, 2, 3, 4, 5, 6]
    with torch.no_grad():
        state = net.path_begin(x)
        for depth in range(net.path_depth()):
            state, out = net.path_step(depth, state, row)
            assert out is state and out.shape[0] == 2
        assert torch.equal(net.head(state), net.forward_path(x, row.tolist()))


def test_path_parameter_names_are_the_ops_state_dict_keys(net: LayerwiseSupernet) -> None:
    row = np.array([2, 8, 8, 0, 0, 0])
    keys = set(net.state_dict())
    names = net.path_parameter_names(0, row)
    assert names and set(names) <= keys and all(n.startswith("layers.0.ops.2.") for n in names)
    assert len(names) == len(list(net.layers[0].ops[2].parameters()))
    assert net.path_parameter_names(2, row) == ()  # skip keeps the shape at layer 2: identity, no parameters
    assert all(n.startswith("layers.1.ops.8.") for n in net.path_parameter_names(1, row))  # strided skip: 1x1 conv


def test_check_rows(net: LayerwiseSupernet) -> None:
    rows = net.check_rows(np.zeros((3, 6), dtype=np.int8))
    assert rows.dtype == np.int64 and rows.shape == (3, 6)
    with pytest.raises(ValueError, match="have 5 layers but the supernet has 6"):
        net.check_rows(np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"layer 3: op index 9 out of range 0\.\.8"):
        net.check_rows(np.array([[0, 0, 0, 9, 0, 0]]))
    with pytest.raises(ValueError, match="non-empty"):
        net.check_rows(np.zeros((0, 6)))
