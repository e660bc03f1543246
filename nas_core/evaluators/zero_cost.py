"""``zero_cost``: training-free proxies of a genotype's network at
initialisation, measured on one mini-batch of D~ (Abdelfattah et al.,
"Zero-Cost Proxies for Lightweight NAS", ICLR 2021; Mellor et al., "Neural
Architecture Search without Training", 2020/2021), with FLOPs and
parameters as the baselines any proxy must beat.

The network is built with ``space.build_network`` under
``nas_core.train.fit.seeded(seed)``; the mini-batch is the first batch of a
loader over D~ shuffled with ``seed`` (``batch_size`` images with their
labels). Every proxy below is "larger is better" as reported, so any of
them can be ``score`` (chosen by ``proxy``); every computed one is reported
as ``proxy_<name>``. Notation: W_l the weight tensor of conv/linear layer l
(biases and BatchNorm parameters are not scored, as in Abdelfattah et al.),
L the cross entropy of the batch, f(x) the logits.

* ``synflow`` (Tanaka et al. 2020, per Abdelfattah et al.):
  S = sum_l sum(W_l ⊙ dR/dW_l) with R = 1ᵀ f(1) the summed logits of one
  all-ones input, on a copy of the network whose every parameter and buffer
  is replaced by its absolute value, in float64 (float32 on MPS, which has
  no float64). BatchNorm: the copy runs in eval mode, so BN uses its
  initial running statistics (mean 0, variance 1) and affine (1, 0): the
  identity up to 1/sqrt(1 + eps), i.e. Abdelfattah's BN-free ``synflow``.
  Sign: >= 0, larger is better. Scale: multiplicative in depth and width
  (measured on 8x8 digits: ~1e5 for a channel-ratio network, ~1e13 for a
  hierarchical one, ~1e67 for the default 20-cell DARTS network); float64
  overflows to inf only past ~1e308.
* ``naswot`` (Mellor et al. 2021): the binary code c_i ∈ {0,1}^U of input i
  is the sign pattern (x > 0) of every ReLU's output in the network;
  K_ij = c_iᵀc_j + (1-c_i)ᵀ(1-c_j) (= U - Hamming distance, accumulated
  layer by layer) and S = log |det K|. Larger is better. Scale: at most
  N · log(U) for a batch of N (digits, N = 64: ~400-800); -inf when two
  codes coincide (K singular).
  What is hooked: every call of ``torch.relu`` / ``F.relu`` / ``Tensor.relu``
  and their in-place forms, caught by a thread-local
  ``torch.overrides.TorchFunctionMode``; ``nn.ReLU`` calls ``F.relu``, so
  module and functional ReLUs are both seen, each once. Other activations
  (ReLU6, hardswish, GELU) are not counted. The spaces registered when this
  was written (channel_ratio, cell, layerwise, hierarchical, dso) use
  ``nn.ReLU`` only, some in place (which does not change the sign pattern).
  A network without any ReLU call is an EvaluatorError.
* ``snip`` (Lee et al. 2019): S = sum_l sum |dL/dW_l ⊙ W_l|. >= 0, larger is
  better; scale ~ the loss's sensitivity to removing all weights.
* ``grad_norm``: S = sum_l ||dL/dW_l||_2, the sum of the per-layer L2 norms
  (Abdelfattah et al.'s definition; not the global norm). >= 0, larger is
  better.
* ``jacob_cov`` (Mellor et al. 2020, v1): J_i = d(1ᵀf(x_i))/dx_i, flattened;
  C the N x N correlation matrix of the rows J_i, λ its eigenvalues, k =
  1e-5; S = -sum_j [log(λ_j + k) + 1/(λ_j + k)]. The bracketed sum is
  smallest when the Jacobians are uncorrelated (all λ = 1), i.e. the raw
  quantity ranks by smaller: it is negated (as Mellor et al. do) so larger
  is better. Scale: at best -N·(log(1 + k) + 1/(1 + k)) ≈ -N, far below
  when inputs' Jacobians are correlated: each eigenvalue near 0 adds about
  -1/k = -1e5. C is singular whenever N >= D, the number of input values
  (8x8 digits, N = 64: one zero eigenvalue, a near-constant offset of
  about -1e5 that leaves the ranking to the other eigenvalues). NaN when
  one image's Jacobian is constant.
* ``flops`` / ``params``: ``space.cost(genotype)`` (multiply-adds per image,
  parameter count); larger is better, since bigger networks usually train to
  higher accuracy (the baseline Abdelfattah et al. compare proxies with).

BatchNorm for the batch proxies (naswot, snip, grad_norm, jacob_cov): the
network is in eval mode except its BatchNorm layers, which normalise with
the batch's statistics, as a train-mode network at initialisation does (the
literature's setting); eval mode keeps training-only branches (DARTS's
auxiliary head, drop path, dropout) out of the measured network. Gradients
are taken with ``torch.autograd.grad``, so ``.grad`` is never written; the
running statistics and training flags are restored afterwards and no hook
stays behind: the network is left as it was. ``budget`` is ignored (a
zero-cost proxy has no fidelity).
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any, Callable, Iterator, Optional

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn
from torch.overrides import TorchFunctionMode

from nas_core.evaluators.base import EVALUATORS, EvalData, Evaluator, EvaluatorError
from nas_core.registry import nearest
from nas_core.sections import Section
from nas_core.train.fit import seeded
from nas_core.train.loop import make_loader

NETWORK_PROXIES = ("synflow", "naswot", "snip", "grad_norm", "jacob_cov")
COST_PROXIES = ("flops", "params")
PROXIES = NETWORK_PROXIES + COST_PROXIES
JACOB_COV_K = 1e-5
RELU_FUNCTIONS = frozenset({F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_})
WEIGHT_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)
BN_TYPES = (nn.modules.batchnorm._BatchNorm,)


def _check_proxy(name: str) -> str:
    if name not in PROXIES:
        hint = nearest(name, list(PROXIES))
        did = f"; did you mean {hint!r}?" if hint else ""
        raise ValueError(f"unknown proxy; allowed: {', '.join(PROXIES)}{did}")
    return name


class ZeroCostConfig(Section):
    """``proxy``: the one reported as ``score``; ``proxies``: the ones
    computed and reported as ``proxy_<name>`` (``proxy`` is always
    computed); ``batch_size``: images of the mini-batch (Abdelfattah et al.
    and Mellor et al.: 64 and 128 on CIFAR; fewer when D~ is smaller)."""

    proxy: str = "naswot"
    proxies: tuple[str, ...] = PROXIES
    batch_size: int = Field(64, ge=2)

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, value: str) -> str:
        return _check_proxy(value)

    @field_validator("proxies")
    @classmethod
    def _proxies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            _check_proxy(name)
        return value

    def computed(self) -> tuple[str, ...]:
        """The proxies to compute, in PROXIES order."""
        wanted = set(self.proxies) | {self.proxy}
        return tuple(name for name in PROXIES if name in wanted)


# ---------------------------------------------------------------- helpers
@contextlib.contextmanager
def unchanged(model: nn.Module) -> Iterator[nn.Module]:
    """Run a block that may switch modes and update BatchNorm statistics,
    then restore every module's training flag and every buffer."""
    modes = [(m, m.training) for m in model.modules()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield model
    finally:
        with torch.no_grad():
            for buf, saved in buffers:
                buf.copy_(saved)
        for module, training in modes:
            module.training = training


def batch_statistics(model: nn.Module) -> nn.Module:
    """Eval mode except BatchNorm, which uses the batch's statistics."""
    model.eval()
    for module in model.modules():
        if isinstance(module, BN_TYPES):
            module.train()
    return model


def logits_of(output: Any) -> torch.Tensor:
    """The logits of a network's output ((logits, auxiliary) -> logits)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def scored_weights(model: nn.Module) -> list[torch.Tensor]:
    """The weight of every conv and linear layer that requires a gradient."""
    return [m.weight for m in model.modules()
            if isinstance(m, WEIGHT_LAYERS) and m.weight is not None and m.weight.requires_grad]


def weight_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(W_l, dL/dW_l) for every scored layer that L depends on."""
    with unchanged(model):
        weights = scored_weights(batch_statistics(model))
        loss = F.cross_entropy(logits_of(model(x)), y)
        grads = torch.autograd.grad(loss, weights, allow_unused=True)
    return [(w.detach(), g) for w, g in zip(weights, grads) if g is not None]


class ReluCodes(TorchFunctionMode):
    """Accumulates the NASWOT kernel over every ReLU call in the block (see
    the module docstring for what is caught)."""

    def __init__(self) -> None:
        super().__init__()
        self.kernel: Optional[torch.Tensor] = None
        self.units = 0

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: Optional[dict] = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if func in RELU_FUNCTIONS:
            self._add(out)
        return out

    def _add(self, out: torch.Tensor) -> None:
        with torch.no_grad():
            code = (out.detach().flatten(1) > 0).float()
            k = (code @ code.T + (1 - code) @ (1 - code).T).double()
        self.kernel = k if self.kernel is None else self.kernel + k
        self.units += code.shape[1]


# ---------------------------------------------------------------- proxies
def synflow(model: nn.Module, input_shape: tuple[int, ...], dtype: torch.dtype = torch.float64) -> float:
    """SynFlow of ``model`` for inputs of shape (C, H, W) (module docstring)."""
    net = copy.deepcopy(model).to(dtype).eval()
    with torch.no_grad():
        for tensor in net.state_dict().values():
            if tensor.is_floating_point():
                tensor.abs_()
    device = next(net.parameters()).device
    weights = scored_weights(net)
    total = logits_of(net(torch.ones((1, *input_shape), dtype=dtype, device=device))).sum()
    grads = torch.autograd.grad(total, weights, allow_unused=True)
    return float(sum((w.detach() * g).sum() for w, g in zip(weights, grads) if g is not None))


def naswot(model: nn.Module, x: torch.Tensor) -> float:
    """log |det K| of the binary ReLU codes of batch ``x`` (Mellor et al. 2021)."""
    with unchanged(model), torch.no_grad():
        batch_statistics(model)
        with ReluCodes() as codes:
            model(x)
    if codes.kernel is None:
        raise EvaluatorError("evaluators.zero_cost: proxy 'naswot' needs ReLUs, and the network calls none "
                             "(allowed: networks using nn.ReLU, F.relu or torch.relu)")
    return float(torch.linalg.slogdet(codes.kernel).logabsdet)


def snip(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """sum_l sum |dL/dW_l ⊙ W_l| (Lee et al. 2019)."""
    return snip_of(weight_gradients(model, x, y))


def grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """sum_l ||dL/dW_l||_2 (per-layer L2 norms, summed)."""
    return grad_norm_of(weight_gradients(model, x, y))


def snip_of(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    return float(sum((g * w).abs().sum() for w, g in pairs))


def grad_norm_of(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    return float(sum(g.norm() for _, g in pairs))


def jacob_cov(model: nn.Module, x: torch.Tensor, k: float = JACOB_COV_K) -> float:
    """-sum_j [log(λ_j + k) + 1/(λ_j + k)], λ the eigenvalues of the
    correlation matrix of the input Jacobians (Mellor et al. 2020)."""
    with unchanged(model):
        batch_statistics(model)
        inputs = x.detach().clone().requires_grad_(True)
        (jac,) = torch.autograd.grad(logits_of(model(inputs)).sum(), inputs)
    eig = torch.linalg.eigvalsh(torch.corrcoef(jac.flatten(1).double()))
    return float(-(torch.log(eig + k) + 1.0 / (eig + k)).sum())


def network_proxies(names: tuple[str, ...], model: nn.Module, x: torch.Tensor,
                    y: torch.Tensor) -> dict[str, float]:
    """The proxies ``names`` of NETWORK_PROXIES of ``model`` on batch (x, y)
    (snip and grad_norm share one backward pass)."""
    out: dict[str, float] = {}
    if "synflow" in names:
        out["synflow"] = synflow(model, tuple(x.shape[1:]), torch.float32 if x.device.type == "mps" else torch.float64)
    if "naswot" in names:
        out["naswot"] = naswot(model, x)
    if "snip" in names or "grad_norm" in names:
        pairs = weight_gradients(model, x, y)
        out.update({"snip": snip_of(pairs), "grad_norm": grad_norm_of(pairs)})
    if "jacob_cov" in names:
        out["jacob_cov"] = jacob_cov(model, x)
    return {name: out[name] for name in names}


def one_batch(dataset: Any, batch_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first batch of ``dataset`` shuffled with ``seed``."""
    if len(dataset) < 2:
        raise EvaluatorError(f"evaluators.zero_cost: D~ has {len(dataset)} image(s); the proxies need >= 2")
    x, y = next(iter(make_loader(dataset, batch_size, shuffle=True, seed=seed)))
    return x, y


@EVALUATORS.register("zero_cost")
class ZeroCostEvaluator(Evaluator):
    name = "zero_cost"
    Config = ZeroCostConfig

    def evaluate(self, genotype: Any, data: EvalData, seed: int, budget: Optional[int] = None,
                 supernet: Optional[nn.Module] = None) -> dict[str, float]:
        names = self.config.computed()
        values: dict[str, float] = {}
        if any(name in COST_PROXIES for name in names):
            cost = self.space.cost(genotype)
            values.update({name: float(cost[name]) for name in COST_PROXIES if name in names})
        if any(name in NETWORK_PROXIES for name in names):
            x, y = one_batch(data.train, self.config.batch_size, seed)
            with seeded(seed):
                model = self.space.build_network(genotype)
            model.to(self.device)
            x, y = x.to(self.device), y.to(self.device)
            values.update(network_proxies(tuple(n for n in names if n in NETWORK_PROXIES), model, x, y))
        metrics = {f"proxy_{name}": values[name] for name in names}
        return {"score": values[self.config.proxy], **metrics}
