"""Gumbel-softmax cell strategies: GDAS (Dong & Yang, CVPR 2019) and SNAS
(Xie et al., ICLR 2019). Both are first order (alternating weight and
alpha steps on ``train_w`` / ``train_a`` like DARTS) and derive the genotype
from softmax(alpha) by the DARTS rule.

GDAS: per forward, per cell kind, one op per edge is sampled by Gumbel-max,
index = argmax(log softmax(alpha) + g), g ~ Gumbel(0, 1); the weights are
the straight-through one-hot h = onehot(index) - p.detach() + p with
p = softmax((log softmax(alpha) + g) / tau), and the edge evaluates ONLY the
sampled op: out = h[index] * op_index(x) (the gradient reaches every alpha
through p). A sample with a non-finite p is redrawn (GDAS code). tau
decreases linearly from ``gdas_tau_max`` (10) to ``gdas_tau_min`` (0.1)
over the epochs. Evaluation uses the argmax op of alpha.

SNAS: all ops weighted by the relaxed sample softmax((log alpha + g) / tau)
(torch's gumbel_softmax on alpha as logits); tau decreases linearly from
``snas_tau_max`` to ``snas_tau_min`` (the paper anneals from 1; the
schedule shape is our choice). Resource penalty (the paper's cost term):
loss += ``snas_resource_weight`` * E[params] / max params, with
E[params] = sum over cells and edges of sum_i w_i * params(op_i), divided by
the sum over edges of the largest op's parameter count, so it lies in
[0, 1]. Parameters, not FLOPs, are the cost: they need no input shape.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from nas_core.strategies.base import STRATEGIES
from nas_core.strategies.darts import KINDS, DartsStrategy
from nas_core.supernet.cell import MixWeights


def linear_tau(epoch: int, epochs: int, tau_max: float, tau_min: float) -> float:
    if epochs <= 1:
        return tau_max
    return tau_max - (tau_max - tau_min) * epoch / (epochs - 1)


def gumbel_hard(alpha: torch.Tensor, tau: float, max_tries: int = 100) -> MixWeights:
    """Straight-through one-hot Gumbel-max sample per row of ``alpha``."""
    logp = F.log_softmax(alpha, dim=-1)
    for _ in range(max_tries):
        gumbel = -torch.empty_like(alpha).exponential_().log()
        probs = F.softmax((logp + gumbel) / tau, dim=-1)
        if torch.isfinite(probs).all():
            break
    else:
        raise FloatingPointError(f"GDAS: no finite Gumbel sample in {max_tries} tries (tau={tau})")
    index = probs.argmax(dim=-1)
    one_hot = torch.zeros_like(probs).scatter_(-1, index.unsqueeze(-1), 1.0)
    return MixWeights(one_hot - probs.detach() + probs, None, index)


class _GumbelStrategy(DartsStrategy):
    supports_second_order = False
    tau_prefix = ""

    def setup(self, data) -> None:
        super().setup(data)
        self.tau = getattr(self.config, f"{self.tau_prefix}_tau_max")

    def before_epoch(self, epoch: int) -> dict[str, float]:
        cfg = self.config
        self.tau = linear_tau(epoch, self.num_epochs(), getattr(cfg, f"{self.tau_prefix}_tau_max"),
                              getattr(cfg, f"{self.tau_prefix}_tau_min"))
        return {"tau": self.tau}


@STRATEGIES.register("gdas")
class GdasStrategy(_GumbelStrategy):
    name = "gdas"
    tau_prefix = "gdas"

    def mix(self, kind: str) -> MixWeights:
        return gumbel_hard(self.arch.alpha(kind), self.tau)

    def eval_mix(self, kind: str) -> MixWeights:
        alpha = self.arch.alpha(kind)
        index = alpha.argmax(dim=-1)
        return MixWeights(torch.zeros_like(alpha).scatter_(-1, index.unsqueeze(-1), 1.0), None, index)


@STRATEGIES.register("snas")
class SnasStrategy(_GumbelStrategy):
    name = "snas"
    tau_prefix = "snas"

    def _build(self, cells: int, schedule_epochs: int) -> None:
        super()._build(cells, schedule_epochs)
        costs = {kind: self.net.op_costs(kind == "reduce").to(self.device) for kind in KINDS}
        scale = sum(float(c.max(dim=1).values.sum()) for c in costs.values() if c.numel())
        self.costs = {k: c / max(scale, 1.0) for k, c in costs.items()}

    def mix(self, kind: str) -> MixWeights:
        return MixWeights(F.gumbel_softmax(self.arch.alpha(kind), tau=self.tau, hard=False, dim=-1))

    def penalty(self, mixes: dict[str, MixWeights]) -> torch.Tensor | float:
        weight = self.config.snas_resource_weight
        if weight == 0:
            return 0.0
        return weight * sum((mixes[k].ops * self.costs[k]).sum() for k in KINDS if self.costs[k].numel())

    def resource(self) -> float:
        """Expected parameter fraction under softmax(alpha) (for metrics)."""
        with torch.no_grad():
            return float(sum((F.softmax(self.arch.alpha(k), -1) * self.costs[k]).sum()
                             for k in KINDS if self.costs[k].numel()))

    def before_epoch(self, epoch: int) -> dict[str, float]:
        return {**super().before_epoch(epoch), "resource": self.resource()}
