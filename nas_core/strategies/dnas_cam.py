"""DNAS-CAM (Xu & He, CVPR-W; dnas-cam.md): differentiable search of a
global architecture, L cells that may all differ, with decoupled
architecture parameters (CAM, Eq. 4-5; nas_core.supernet.global_cell):

    psi[k, i, j] = sigmoid(alpha[i, j]) * softmax_i(beta[k, :])[i] * sigmoid(gamma[k, j])

L*C + L*Op + C*Op parameters instead of the L*C*Op of one table per cell;
``parameterisation`` ``iam`` (one sigmoid(alpha) for every cell) and
``full`` (sigmoid of an L*C*Op table) are the ablation's baselines.

What §3.4 and §4.2 add to DARTS, as implemented here:
- partial channel connections (PC-DARTS): 1/``pc_k`` of the channels go
  through each mixed op (nas_core.supernet.cell.MixedOp); PC-DARTS's edge
  normalisation is not added on top, since softmax(beta) already weights
  every connection of every cell;
- Fair-DARTS's zero-one loss on the sigmoid outputs, weight
  ``zero_one_weight`` (Fair-DARTS: 10), added to the architecture
  objective only (the weight step minimises cross-entropy);
- skip-connection dropout ``skip_dropout`` = 0.2 on every skip-connect of
  the supernet, constant over the search (§4.2 gives one rate);
- otherwise DARTS's hyper-parameters (§4.2: 16 channels, DARTS's settings):
  DARTS's bi-level loop, optimisers and schedules are inherited from
  :class:`~nas_core.strategies.darts.DartsStrategy`.

The supernet has the space's L cells (``spaces.global_cell.cells``: the
global architecture is searched at its final depth). The derived genotype
applies DARTS's rule to every cell's psi[k] (the edge strength includes
beta). The tables DC-NAS samples from are, per cell k, psi[k] normalised over
the ops (``cell_<k>``) and psi[k] summed over the ops (``edges_<k>``), so
Eq. 9 scores a kept edge with its psi.
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional

import numpy as np
import torch
from pydantic import Field, model_validator
from torch.func import functional_call
from torch.nn import functional as F
from torch.utils.data import DataLoader

from nas_core.sections import CrossFieldError
from nas_core.spaces.cell import SKIP
from nas_core.spaces.global_cell import GlobalCellGenotype, GlobalCellSpace, derive_global
from nas_core.spaces.global_cell.tables import make_tables
from nas_core.strategies.base import STRATEGIES, SearchData, SearchResult, SpacesOf
from nas_core.strategies.darts import DartsFamilyConfig, DartsStrategy, SecondOrderKeys
from nas_core.supernet.cell import MixWeights
from nas_core.supernet.global_cell import CamArchParams, GlobalSearchNetwork, zero_one_loss


class DnasCamConfig(SecondOrderKeys, DartsFamilyConfig):
    """``strategies.dnas_cam`` (defaults: the paper's CIFAR-10 search, which
    takes DARTS's settings; PC-DARTS's K = 4; Fair-DARTS's zero-one weight
    10). The number of cells is ``spaces.global_cell.cells``."""

    section: ClassVar[str] = "dnas_cam"
    parameterisation: Literal["cam", "iam", "full"] = "cam"
    pc_k: int = Field(4, ge=1, description="1/K of the channels through each mixed op")
    skip_dropout: float = Field(0.2, ge=0.0, lt=1.0)
    zero_one_weight: float = Field(10.0, ge=0.0)

    @model_validator(mode="after")
    def _k_divides_channels(self) -> "DnasCamConfig":
        if self.init_channels % self.pc_k:
            raise CrossFieldError("strategies.dnas_cam.pc_k", self.pc_k,
                                  f"must divide strategies.dnas_cam.init_channels ({self.init_channels})")
        return self


@STRATEGIES.register("dnas_cam")
class DnasCamStrategy(DartsStrategy):
    """DNAS-CAM over a :class:`GlobalCellSpace`; ``self.supernet`` is the
    :class:`GlobalSearchNetwork`, ``self.arch`` the
    :class:`CamArchParams`."""

    name = "dnas_cam"
    spaces = SpacesOf("global_cell")
    space_type = GlobalCellSpace
    Config = DnasCamConfig

    # ------------------------------------------------------------ building
    def setup(self, data: Optional[SearchData]) -> None:
        torch.manual_seed(self.seed)
        self._build(self.space.cells, self.config.epochs)

    def partial_k(self) -> int:
        return self.config.pc_k

    def _build(self, cells: int, schedule_epochs: int) -> None:
        cfg = self.config
        self.supernet = GlobalSearchNetwork(self.op_names, self.space.input_channels, self.space.num_classes,
                                            cfg.init_channels, cells, self.partial_k()).to(self.device)
        self.supernet.set_skip_dropout(cfg.skip_dropout)
        self.arch = CamArchParams(cells, len(self.op_names), cfg.parameterisation).to(self.device)
        self.w_opt = torch.optim.SGD(self.supernet.parameters(), lr=cfg.w_lr, momentum=cfg.w_momentum,
                                     weight_decay=cfg.w_weight_decay)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_opt, T_max=schedule_epochs,
                                                                eta_min=cfg.w_lr_min)
        self.a_opt = torch.optim.Adam(self.arch.parameters(), lr=cfg.arch_lr, betas=tuple(cfg.arch_betas),
                                      weight_decay=cfg.arch_weight_decay)

    # ------------------------------------------------------------ op weights
    def mixes(self, detach: bool = False) -> list[MixWeights]:
        """Every cell's op weights psi[k] (Eq. 5 needs no further weights)."""
        psi = self.arch.psi()
        psi = psi.detach() if detach else psi
        return [MixWeights(psi[k]) for k in range(psi.shape[0])]

    def _loss(self, x: torch.Tensor, y: torch.Tensor, params: Optional[dict] = None,
              detach_arch: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy, plus the weighted zero-one loss when the
        architecture parameters are not detached (the architecture step)."""
        mixes = self.mixes(detach_arch)
        if params is None:
            logits = self.supernet(x, mixes)
        else:
            buffers = {n: b.clone() for n, b in self.supernet.named_buffers()}
            logits = functional_call(self.supernet, {**params, **buffers}, (x, mixes))
        loss = F.cross_entropy(logits, y)
        if not detach_arch and self.config.zero_one_weight > 0:
            loss = loss + self.config.zero_one_weight * zero_one_loss(self.arch.sigmoids())
        return loss, logits

    # ------------------------------------------------------------ epoch
    def train_epoch(self, epoch: int, data: SearchData) -> dict[str, float]:
        """DARTS's epoch; also the number of distinct cells of the derived
        genotype, its skip-connects in the shallow and the deep half of the
        stack (Fig. 5's observation) and the zero-one loss."""
        metrics = super().train_epoch(epoch, data)
        genotype, half = self.genotype(), self.space.cells // 2
        with torch.no_grad():
            zero_one = float(zero_one_loss(self.arch.sigmoids()))
        skips = [sum(op == SKIP for op, _ in cell) for cell in genotype.cells]
        return {**metrics, "distinct_cells": float(len(set(genotype.cells))),
                "skip_shallow": float(sum(skips[:half])), "skip_deep": float(sum(skips[half:])),
                "zero_one": zero_one}

    @torch.no_grad()
    def evaluate(self, loader: DataLoader) -> dict[str, float]:
        self.supernet.eval()
        total = correct = seen = 0
        mixes = self.mixes(detach=True)
        for x, y in loader:
            x, y = x.to(self.device), y.to(self.device)
            logits = self.supernet(x, mixes)
            total += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        self.supernet.train()
        return {"val_loss": total / max(seen, 1), "val_acc": correct / max(seen, 1)}

    # ------------------------------------------------------------ result
    def psi(self) -> np.ndarray:
        """(L, 14, n_ops) op weights of every cell, float64."""
        with torch.no_grad():
            return self.arch.psi().cpu().double().numpy()

    def tables(self) -> dict[str, np.ndarray]:
        """Per cell k, ``cell_<k>`` (14, n_ops): psi[k] normalised over the
        ops, and ``edges_<k>`` (14,): psi[k] summed over the ops (module
        docstring)."""
        psi = self.psi()
        edges = psi.sum(axis=-1)
        return make_tables(psi / edges[..., None], edges)

    def probabilities(self) -> dict[str, np.ndarray]:
        """Per cell ``cell_<k>``: psi[k] normalised over the ops."""
        return {k: v for k, v in self.tables().items() if k.startswith("cell_")}

    def edge_weights(self) -> dict[str, np.ndarray]:
        """Per cell ``edges_<k>``: psi[k] summed over the ops."""
        return {k: v for k, v in self.tables().items() if k.startswith("edges_")}

    def strengths(self) -> dict[str, np.ndarray]:
        """DARTS's derivation weights: psi (L, 14, n_ops)."""
        return {"psi": self.psi()}

    def genotype(self) -> GlobalCellGenotype:
        return derive_global(self.psi(), self.op_names)

    def arrays(self) -> dict[str, np.ndarray]:
        """``psi`` (L, 14, n_ops): every cell's op weights (saved per epoch)."""
        return {"psi": self.psi()}

    def figures(self, result: SearchResult) -> dict[str, Any]:
        """The space's per-cell tables and the op share by depth (Fig. 5's
        view of psi)."""
        figures = super().figures(result)
        figures["ops_by_depth.png"] = plot_ops_by_depth(self.psi(), result.genotype, self.op_names,
                                                        f"{self.name} ({self.config.parameterisation})")
        return figures

    def derive(self) -> SearchResult:
        return SearchResult(genotype=self.genotype(), tables=self.tables(), history=list(self.history),
                            extras={"parameterisation": self.config.parameterisation,
                                    "arch_parameters": sum(p.numel() for p in self.arch.parameters())})


def plot_ops_by_depth(psi: np.ndarray, genotype: GlobalCellGenotype, op_names: tuple[str, ...], title: str = ""):
    """Heatmap of each op's share of cell k's psi (sum over the connections,
    normalised per cell), annotated with how many kept edges of the derived
    ``genotype`` use the op in that cell; returns the matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    share = psi.sum(axis=1)
    share = share / share.sum(axis=1, keepdims=True)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(op_names), 1.5 + 0.35 * len(share)))
    image = ax.imshow(share, cmap="viridis", aspect="auto")
    for k, cell in enumerate(genotype.cells):
        for j, name in enumerate(op_names):
            count = sum(op == name for op, _ in cell)
            if count:
                ax.text(j, k, str(count), ha="center", va="center", color="white", fontsize=8)
    ax.set_xticks(range(len(op_names)), op_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(share)), [f"{k} {genotype.kind(k)}" for k in range(len(share))], fontsize=8)
    ax.set_xlabel("op (numbers: kept edges of the derived cell)")
    ax.set_ylabel("cell (stem at the top)")
    ax.set_title(f"{title} op share of psi by depth".strip())
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig
