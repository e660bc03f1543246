"""The zero_cost evaluator: every proxy against a value computed by hand
(numpy) on a 2-layer network, the network left as it was, and the evaluator
on every registered space (tiny params.yaml configs, 8x8 grey images, 10
classes): finite, reproducible for a seed, bad proxy names refused."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from nas_core.config import ParamsError, load_params
from nas_core.evaluators import EvalData, EvaluatorError, create_evaluator
from nas_core.evaluators.zero_cost import PROXIES, grad_norm, jacob_cov, naswot, snip, synflow
from nas_core.spaces import SPACES, make_space
from tests.train.one_thread import one_thread  # noqa: F401  (tiny models: one torch thread)

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"
SHAPE, CLASSES = (1, 8, 8), 10
TINY = {"cell": {"final_cells": 3, "final_channels": 4}}  # params.yaml's 8 x 16 is the slow part

W1 = np.array([[0.5, -0.2, 0.1, 0.3], [-0.4, 0.6, 0.2, -0.1], [0.3, 0.1, -0.5, 0.2]])
B1 = np.array([0.1, -0.1, 0.05])
W2 = np.array([[0.7, -0.3, 0.2], [-0.6, 0.4, 0.5]])
B2 = np.array([0.05, -0.02])
X = np.array([[1.0, 0.5, -0.3, 0.2], [-0.5, 1.0, 0.4, -0.2], [0.3, -0.8, 1.0, 0.6]])
Y = np.array([0, 1, 1])


# ------------------------------------------------------------------ hand-computed references
def forward(x):
    pre = x @ W1.T + B1
    return pre, np.maximum(pre, 0) @ W2.T + B2


def ce_weight_grads():
    pre, z = forward(X)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dz = (p - np.eye(2)[Y]) / len(X)
    dw2 = dz.T @ np.maximum(pre, 0)
    dpre = (dz @ W2) * (pre > 0)
    return dpre.T @ X, dw2


def ref_synflow():
    h = np.abs(W1) @ np.ones(4) + np.abs(B1)       # all positive: the ReLU passes everything
    d_w1 = np.outer(np.abs(W2).sum(0), np.ones(4))  # dR/dW1[j, i] = sum_k |W2[k, j]| * 1
    return (np.abs(W1) * d_w1).sum() + (np.abs(W2) * h[None, :]).sum()


def ref_naswot():
    c = (forward(X)[0] > 0).astype(float)
    return np.linalg.slogdet(c @ c.T + (1 - c) @ (1 - c).T)[1]


def ref_snip():
    d_w1, d_w2 = ce_weight_grads()
    return np.abs(d_w1 * W1).sum() + np.abs(d_w2 * W2).sum()


def ref_grad_norm():
    d_w1, d_w2 = ce_weight_grads()
    return np.linalg.norm(d_w1) + np.linalg.norm(d_w2)


def ref_jacob_cov(k=1e-5):
    mask = forward(X)[0] > 0
    jac = (mask * W2.sum(0)) @ W1  # d(sum of logits)/dx per input
    eig = np.linalg.eigvalsh(np.corrcoef(jac))
    return -np.sum(np.log(eig + k) + 1 / (eig + k))


# ------------------------------------------------------------------ networks
def two_layer(functional: bool = False) -> nn.Module:
    net = FunctionalTwoLayer() if functional else nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    first, second = (net.fc1, net.fc2) if functional else (net[0], net[2])
    with torch.no_grad():
        for layer, w, b in ((first, W1, B1), (second, W2, B2)):
            layer.weight.copy_(torch.tensor(w))
            layer.bias.copy_(torch.tensor(b))
    return net


class FunctionalTwoLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 3), nn.Linear(3, 2)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


def batch():
    return torch.tensor(X, dtype=torch.float32), torch.tensor(Y)


@pytest.mark.parametrize("proxy, reference", [
    (lambda net, x, y: synflow(net, (4,)), ref_synflow),
    (lambda net, x, y: naswot(net, x), ref_naswot),
    (snip, ref_snip),
    (grad_norm, ref_grad_norm),
    (lambda net, x, y: jacob_cov(net, x), ref_jacob_cov),
], ids=["synflow", "naswot", "snip", "grad_norm", "jacob_cov"])
def test_each_proxy_equals_its_hand_computed_value_on_a_two_layer_network(proxy, reference):
    value = proxy(two_layer(), *batch())
    assert value == pytest.approx(reference(), rel=1e-5)


def test_naswot_counts_functional_relu_like_module_relu():
    x, _ = batch()
    assert naswot(two_layer(functional=True), x) == pytest.approx(naswot(two_layer(), x), rel=1e-12)


def test_naswot_on_a_network_without_relu_is_a_clear_error():
    with pytest.raises(EvaluatorError, match="naswot.*ReLU"):
        naswot(nn.Sequential(nn.Linear(4, 2)), batch()[0])


def test_synflow_treats_fresh_batchnorm_as_the_identity():
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    with_bn = nn.Sequential(plain[0], nn.BatchNorm1d(6), plain[1], plain[2])
    assert synflow(with_bn, (4,)) == pytest.approx(synflow(plain, (4,)), rel=1e-4)


def test_proxies_leave_the_network_as_it_was():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                        nn.Flatten(), nn.Linear(4 * 8 * 8, 10)).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = torch.randn(6, *SHAPE), torch.arange(6)
    synflow(net, SHAPE), naswot(net, x), snip(net, x, y), grad_norm(net, x, y), jacob_cov(net, x)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) and before[k].dtype == after[k].dtype for k in before)
    assert all(m.training for m in net.modules())
    assert all(p.grad is None for p in net.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())


# ------------------------------------------------------------------ the evaluator on every space
@pytest.fixture(scope="module")
def data():
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target)
    return EvalData(TensorDataset(x[:300], y[:300]), TensorDataset(x[300:400], y[300:400]), "digits")


@pytest.fixture(scope="module")
def params():
    return load_params(PARAMS)


def tiny_space(name, params):
    section = getattr(params.spaces, name).model_dump()
    return make_space(name, {**section, **TINY.get(name, {})}, SHAPE, CLASSES)


@pytest.mark.parametrize("name", SPACES.names())
def test_every_proxy_is_finite_and_reproducible_on_every_space(name, params, data):
    space = tiny_space(name, params)
    evaluator = create_evaluator("zero_cost", space, {"batch_size": 16})
    genotype = space.random(np.random.default_rng(0))
    metrics = evaluator.evaluate(genotype, data, seed=3)
    assert set(metrics) == {"score"} | {f"proxy_{p}" for p in PROXIES}
    assert all(np.isfinite(v) for v in metrics.values()), metrics
    assert metrics["score"] == metrics["proxy_naswot"]
    assert metrics["proxy_params"] == space.cost(genotype)["params"]
    assert evaluator.evaluate(genotype, data, seed=3) == metrics
    naswot_only = create_evaluator("zero_cost", space, {"batch_size": 16, "proxies": ["naswot"]})
    assert naswot_only.evaluate(genotype, data, seed=4)["score"] != metrics["score"]  # another batch


def test_same_values_when_trials_run_in_parallel_threads(params, data):
    space = tiny_space("channel_ratio", params)
    evaluator = create_evaluator("zero_cost", space, {"batch_size": 32})
    genotypes = [space.random(np.random.default_rng(s)) for s in range(4)]
    alone = [evaluator.evaluate(g, data, seed=i) for i, g in enumerate(genotypes)]
    together = [None] * 4

    def work(i):
        together[i] = evaluator.evaluate(genotypes[i], data, seed=i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone


def test_score_follows_proxy_and_only_the_listed_proxies_are_computed(params, data):
    space = tiny_space("channel_ratio", params)
    genotype = space.random(np.random.default_rng(0))
    metrics = create_evaluator("zero_cost", space, {"proxy": "params", "proxies": ["flops"]}).evaluate(
        genotype, data, seed=0)
    assert metrics == {"score": space.cost(genotype)["params"], "proxy_flops": space.cost(genotype)["flops"],
                       "proxy_params": space.cost(genotype)["params"]}


@pytest.mark.parametrize("section, key", [({"proxy": "synflw"}, "evaluators.zero_cost.proxy = 'synflw'"),
                                          ({"proxies": ["naswot", "fisher"]}, "evaluators.zero_cost.proxies")])
def test_a_bad_proxy_name_is_an_error_naming_the_key(section, key, params):
    space = tiny_space("channel_ratio", params)
    with pytest.raises(EvaluatorError) as err:
        create_evaluator("zero_cost", space, section)
    assert key in str(err.value) and "allowed: synflow, naswot" in str(err.value)
    dotted = {f"evaluators.zero_cost.{k}": v for k, v in section.items()}
    with pytest.raises(ParamsError, match=key.split(" =")[0].replace(".", r"\.")):
        load_params(PARAMS, dotted)
