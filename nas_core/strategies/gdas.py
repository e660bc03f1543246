"""GDAS (Dong & Yang, CVPR 2019), and the Gumbel base it shares with SNAS
(snas.py). Both are first order (alternating weight and alpha steps on
``train_w`` / ``train_a`` like DARTS) and derive the genotype from
softmax(alpha) by the DARTS rule.

GDAS: per forward, per cell kind, one op per edge is sampled by Gumbel-max,
index = argmax(log softmax(alpha) + g), g ~ Gumbel(0, 1); the weights are
the straight-through one-hot h = onehot(index) - p.detach() + p with
p = softmax((log softmax(alpha) + g) / tau), and the edge evaluates ONLY the
sampled op: out = h[index] * op_index(x) (the gradient reaches every alpha
through p). A sample with a non-finite p is redrawn (GDAS code). tau
decreases linearly from ``tau_max`` (10) to ``tau_min`` (0.1) over the
epochs (the paper's schedule). Evaluation uses the argmax op of
alpha.

Other defaults: the paper's 240 search epochs; the proxy network, batch and
optimisers as DARTS.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field, model_validator
from torch.nn import functional as F

from nas_core.sections import CrossFieldError
from nas_core.strategies.base import STRATEGIES
from nas_core.strategies.darts import DartsFamilyConfig, DartsStrategy
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


class GumbelConfig(DartsFamilyConfig):
    """The DARTS-family keys plus the Gumbel temperature, annealed linearly
    from ``tau_max`` to ``tau_min`` over the epochs."""

    section: ClassVar[str] = "gumbel"
    tau_max: float = Field(10.0, gt=0)
    tau_min: float = Field(0.1, gt=0)

    @model_validator(mode="after")
    def _tau_decreases(self) -> "GumbelConfig":
        if self.tau_min > self.tau_max:
            raise CrossFieldError(f"strategies.{self.section}.tau_min", self.tau_min,
                                  f"must be <= strategies.{self.section}.tau_max ({self.tau_max})")
        return self


class GumbelStrategy(DartsStrategy):
    """First-order DARTS with a Gumbel temperature annealed linearly from
    ``config.tau_max`` to ``config.tau_min`` over the epochs."""

    def second_order(self) -> bool:
        return False

    def setup(self, data) -> None:
        super().setup(data)
        self.tau = self.config.tau_max

    def before_epoch(self, epoch: int) -> dict[str, float]:
        self.tau = linear_tau(epoch, self.num_epochs(), self.config.tau_max, self.config.tau_min)
        return {"tau": self.tau}


class GdasConfig(GumbelConfig):
    """``strategies.gdas``."""

    section: ClassVar[str] = "gdas"
    cells: int = Field(8, ge=1)
    epochs: int = Field(240, ge=1)


@STRATEGIES.register("gdas")
class GdasStrategy(GumbelStrategy):
    name = "gdas"
    Config = GdasConfig

    def mix(self, kind: str) -> MixWeights:
        return gumbel_hard(self.arch.alpha(kind), self.tau)

    def eval_mix(self, kind: str) -> MixWeights:
        alpha = self.arch.alpha(kind)
        index = alpha.argmax(dim=-1)
        return MixWeights(torch.zeros_like(alpha).scatter_(-1, index.unsqueeze(-1), 1.0), None, index)
