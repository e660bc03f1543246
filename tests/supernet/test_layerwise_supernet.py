"""LayerwiseSupernet: mixture forward, single-path forward, theta."""
from __future__ import annotations

import pytest
import torch

from nas_core.spaces import make_space
from nas_core.supernet import LayerwiseSupernet


@pytest.fixture(scope="module")
def net() -> LayerwiseSupernet:
    torch.manual_seed(0)
    return LayerwiseSupernet(make_space("fbnet", "digits", (1, 8, 8), 10)).eval()


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
