"""PC-DARTS (Xu et al., ICLR 2020): DARTS with partial channel connections
and edge normalisation.

- Partial channels: on every edge only 1/K of the channels (``pc_k``) go
  through the mixed op, the rest bypass it (max-pooled on reducing edges),
  then the channels are shuffled with K groups
  (:class:`nas_core.supernet.cell.MixedOp`). K = 1 is DARTS exactly.
- Edge normalisation (``pc_edge_norm``): node j = sum_i softmax_i(beta_j)
  * mixed_op_{i,j}(x_i), the softmax over the edges entering node j; the
  strength used to derive the genotype is softmax(beta) x softmax(alpha),
  and the tables carry softmax(beta) as ``edges_normal`` / ``edges_reduce``.

Defaults are the paper's CIFAR-10 search (reference-notes.md): K = 4, batch
256, weight lr 0.1, arch lr 6e-4, alpha updates after 15 warm-up epochs;
the rest (8 cells, 16 channels, 50 epochs, schedules) as DARTS.
"""
from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from nas_core.sections import CrossFieldError
from nas_core.strategies.base import STRATEGIES
from nas_core.strategies.darts import DartsConfig, DartsStrategy


class PcDartsConfig(DartsConfig):
    """``strategies.pc_darts``."""

    section: ClassVar[str] = "pc_darts"
    batch_size: int = Field(256, ge=1)
    w_lr: float = Field(0.1, gt=0)
    arch_lr: float = Field(6e-4, gt=0)
    warmup_epochs: int = Field(15, ge=0, description="epochs before alpha is first updated")
    pc_k: int = Field(4, ge=1)
    pc_edge_norm: bool = True

    @model_validator(mode="after")
    def _k_divides_channels(self) -> "PcDartsConfig":
        if self.init_channels % self.pc_k:
            raise CrossFieldError("strategies.pc_darts.pc_k", self.pc_k,
                                  f"must divide strategies.pc_darts.init_channels ({self.init_channels})")
        return self


@STRATEGIES.register("pc_darts")
class PcDartsStrategy(DartsStrategy):
    name = "pc_darts"
    Config = PcDartsConfig

    def partial_k(self) -> int:
        return self.config.pc_k

    def edge_norm(self) -> bool:
        return self.config.pc_edge_norm
