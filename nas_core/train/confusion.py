"""Gradient confusion (StacNAS, stacnas.md §3.4.2 and appendix C), a
training diagnostic: how much the gradients of different mini-batches
disagree. StacNAS measures it on its search proxy (and matches stage 1's
depth by it); the retrain stage on every trained finalist.

For losses l_1..l_m of m mini-batches, zeta = max over pairs i != j of
-<grad l_i(w), grad l_j(w)>; the reported value is the mean of zeta over
``iterations`` draws of m mini-batches, divided by the number of parameters
M. The pairs exclude i = j (the definition's max would otherwise include
-||grad l_i||^2, which never wins unless every pair agrees); the paper does
not state m.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from nas_core.train.loop import forever


def gradient_confusion(grads: Sequence[torch.Tensor]) -> float:
    """max over pairs i != j of -<g_i, g_j> of flat gradient vectors."""
    if len(grads) < 2:
        raise ValueError(f"gradient confusion needs >= 2 mini-batch gradients, got {len(grads)}")
    g = torch.stack([v.reshape(-1).double() for v in grads])
    inner = -(g @ g.T)
    mask = ~torch.eye(len(grads), dtype=torch.bool)
    return float(inner[mask].max())


def flat_grad(loss: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
    grads = torch.autograd.grad(loss, list(params), allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)])


def mean_confusion(loss_fn: Callable[[object], torch.Tensor], params: Sequence[torch.Tensor],
                   draws: Iterable[Sequence[object]]) -> float:
    """Appendix C's normalised confusion: the mean over ``draws`` (each a
    list of m mini-batches) of :func:`gradient_confusion` of the gradients
    of ``loss_fn(batch)`` w.r.t. ``params``, divided by the parameter
    count M."""
    params = list(params)
    count = sum(p.numel() for p in params)
    values = [gradient_confusion([flat_grad(loss_fn(b), params) for b in batches]) for batches in draws]
    if not values:
        raise ValueError("gradient confusion: no mini-batch draws")
    return float(np.mean(values)) / count


def confusion_draws(loader: DataLoader, iterations: int, batches: int) -> list[list[Any]]:
    """``iterations`` draws of ``batches`` consecutive mini-batches of
    ``loader``, starting over (reshuffled) when it runs out."""
    stream = forever(loader, "gradient-confusion")
    return [[next(stream) for _ in range(batches)] for _ in range(iterations)]


def network_confusion(network: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor],
                      draws: Sequence[Sequence[tuple[torch.Tensor, torch.Tensor]]], device: torch.device,
                      reached_only: bool = False) -> float:
    """:func:`mean_confusion` of ``network``'s parameters for the
    cross-entropy of ``forward(x)`` on draws of (x, y) mini-batches, in
    training mode (batch statistics); its BatchNorm running statistics and
    mode are restored afterwards. With ``reached_only`` the gradients and
    the count M cover only the parameters the loss reaches (found on the
    first mini-batch), e.g. not a final network's auxiliary head when
    ``forward`` keeps only the main logits."""
    buffers = {n: b.clone() for n, b in network.named_buffers()}
    was_training = network.training
    network.train()

    def loss(batch):
        x, y = (t.to(device) for t in batch)
        return nn.functional.cross_entropy(forward(x), y)

    try:
        params = [p for p in network.parameters() if p.requires_grad]
        if reached_only:
            grads = torch.autograd.grad(loss(draws[0][0]), params, allow_unused=True)
            params = [p for p, g in zip(params, grads) if g is not None]
        return mean_confusion(loss, params, draws)
    finally:
        network.train(was_training)
        with torch.no_grad():
            for n, b in network.named_buffers():
                b.copy_(buffers[n])
