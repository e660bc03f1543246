"""DARTS's second-order architecture gradient (finite-difference Hessian-
vector product) against the exact derivative and a numerical check."""
from __future__ import annotations

import torch
from darts_helpers import digits_data, make
from torch.nn import functional as F

XI = 0.5  # large virtual step, so the second-order term is not negligible
# The tiny proxy (batch 8, BN on 2x2 maps) is so curved in w that DARTS's
# r = 0.01 difference step is far from the limit; in float64 a small r shows
# the implementation converges to the exact derivative.
R = 1e-7


def _setup():
    torch.set_num_threads(1)
    strategy = make("darts", op_set="S5", cells=3, init_channels=4, order=2)
    data = digits_data(n_w=8, n_a=8, batch=8)
    strategy.setup(data)
    strategy.supernet.double()
    strategy.arch.double()
    xw, yw = next(iter(data.train_w))
    xa, ya = next(iter(data.train_a))
    return strategy, xw.double(), yw, xa.double(), ya


def _unrolled_objective(strategy, xw, yw, xa, ya):
    """L_val(w - xi * grad_w L_train(w, alpha), alpha), differentiable in alpha."""
    w = dict(strategy.supernet.named_parameters())
    train_loss, _ = strategy._loss(xw, yw, w)
    g = torch.autograd.grad(train_loss, list(w.values()), create_graph=True)
    w1 = {n: p - XI * gi for (n, p), gi in zip(w.items(), g)}
    return strategy._loss(xa, ya, w1)[0]


def test_second_order_gradient_matches_exact_and_finite_difference():
    strategy, xw, yw, xa, ya = _setup()
    approx = strategy.unrolled_arch_grads(xw, yw, xa, ya, XI, r=R)
    alphas = list(strategy.arch.parameters())
    exact = torch.autograd.grad(_unrolled_objective(strategy, xw, yw, xa, ya), alphas)
    first = torch.autograd.grad(strategy._loss(xa, ya)[0], alphas)
    flat = lambda ts: torch.cat([t.flatten() for t in ts])  # noqa: E731
    a, e, f = flat(approx), flat(exact), flat(first)
    assert (e - f).norm() > 1e-2 * e.norm()  # the Hessian term matters here
    assert (a - e).norm() < 1e-5 * e.norm()

    alpha = strategy.arch.alpha_reduce
    for idx in [(0, 0), (5, 1), (13, 2)]:  # central differences on a few alphas
        h, values = 1e-7, []
        for sign in (1, -1):
            with torch.no_grad():
                alpha[idx] += sign * h
            values.append(float(_unrolled_objective(strategy, xw, yw, xa, ya).detach()))
            with torch.no_grad():
                alpha[idx] -= sign * h
        numeric = (values[0] - values[1]) / (2 * h)
        assert abs(numeric - float(approx[1][idx])) < 1e-6 + 1e-4 * abs(numeric)


def test_second_order_search_step_updates_alpha():
    strategy, xw, yw, xa, ya = _setup()
    before = strategy.arch.alpha_normal.detach().clone()
    strategy._arch_step(xw, yw, xa, ya)
    assert not torch.equal(before, strategy.arch.alpha_normal)
    assert F.softmax(strategy.arch.alpha_normal, -1).shape == (14, 3)
