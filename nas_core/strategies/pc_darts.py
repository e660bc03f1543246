"""PC-DARTS (Xu et al., ICLR 2020): DARTS with partial channel connections
and edge normalisation.

- Partial channels: on every edge only 1/K of the channels (``pc_k``) go
  through the mixed op, the rest bypass it (max-pooled on reducing edges),
  then the channels are shuffled with K groups
  (:class:`nas_core.supernet.cell.MixedOp`). K = 1 is DARTS exactly.
- Edge normalisation (``pc_edge_norm``): node j = sum_i softmax_i(beta_j)
  * mixed_op_{i,j}(x_i), the softmax over the edges entering node j; the
  strength used to derive the genotype is softmax(beta) x softmax(alpha).

Paper settings (CIFAR: K = 4, batch 256, weight lr 0.1, arch lr 6e-4, 15
warm-up epochs) are params; everything else is inherited from DARTS.
"""
from __future__ import annotations

from nas_core.strategies.base import STRATEGIES
from nas_core.strategies.darts import DartsStrategy


@STRATEGIES.register("pc_darts")
class PcDartsStrategy(DartsStrategy):
    name = "pc_darts"

    def partial_k(self) -> int:
        return self.config.pc_k

    def edge_norm(self) -> bool:
        return self.config.pc_edge_norm
