"""SNAS (Xie et al., ICLR 2019): stochastic NAS on the cell space, first
order like GDAS (the Gumbel base is nas_core.strategies.gdas).

All ops are weighted by the relaxed sample softmax((log alpha + g) / tau)
(torch's gumbel_softmax on alpha as logits); tau decreases linearly from
``tau_max`` (1, the paper's initial temperature) to ``tau_min``
(0.03; the schedule's shape is our choice). Resource penalty (the paper's
cost term): loss += ``resource_weight`` * E[params] / max params, with
E[params] = sum over cells and edges of sum_i w_i * params(op_i), divided by
the sum over edges of the largest op's parameter count, so it lies in
[0, 1]. Parameters, not FLOPs, are the cost: they need no input shape. The
paper reports mild / moderate / aggressive constraints without one weight
that fits this normalisation; 1e-2 is ours.

Other defaults: the paper's 150 search epochs; the proxy network, batch and
optimisers as DARTS.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch.nn import functional as F

from nas_core.spaces.cell import KINDS
from nas_core.strategies.base import STRATEGIES
from nas_core.strategies.gdas import GumbelConfig, GumbelStrategy
from nas_core.supernet.cell import MixWeights


class SnasConfig(GumbelConfig):
    """``strategies.snas``."""

    section: ClassVar[str] = "snas"
    cells: int = Field(8, ge=1)
    epochs: int = Field(150, ge=1)
    tau_max: float = Field(1.0, gt=0)
    tau_min: float = Field(0.03, gt=0)
    resource_weight: float = Field(1e-2, ge=0)


@STRATEGIES.register("snas")
class SnasStrategy(GumbelStrategy):
    name = "snas"
    Config = SnasConfig

    def _build(self, cells: int, schedule_epochs: int) -> None:
        super()._build(cells, schedule_epochs)
        costs = {kind: self.supernet.op_costs(kind == "reduce").to(self.device) for kind in KINDS}
        scale = sum(float(c.max(dim=1).values.sum()) for c in costs.values() if c.numel())
        self.costs = {k: c / max(scale, 1.0) for k, c in costs.items()}

    def mix(self, kind: str) -> MixWeights:
        return MixWeights(F.gumbel_softmax(self.arch.alpha(kind), tau=self.tau, hard=False, dim=-1))

    def penalty(self, mixes: dict[str, MixWeights]) -> torch.Tensor | float:
        weight = self.config.resource_weight
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
