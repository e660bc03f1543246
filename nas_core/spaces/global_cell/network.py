"""The final network of a global genotype: DARTS's evaluation network
(nas_core.spaces.cell.network: stem, cells with reductions at L // 3 and
2L // 3, global pooling, linear classifier, drop path, auxiliary head) in
which cell k is the genotype's k-th cell instead of one of two shared
cells. The depth is the genotype's L (a global architecture is searched at
its final depth); the width is the space's ``final_channels``."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from nas_core.spaces.cell import NODES, GenotypeCell, cell_plan, stem
from nas_core.spaces.cell.network import STEM_MULTIPLIER, AuxiliaryHead
from nas_core.spaces.global_cell.genotype import GlobalCellGenotype


class GlobalCellNetwork(nn.Module):
    """With ``auxiliary``, DARTS's auxiliary head reads cell 2L // 3 and, in
    training mode only (batches of two or more), ``forward`` returns
    ``(logits, auxiliary logits)``, as nas_core.spaces.cell.CellNetwork."""

    def __init__(self, genotype: GlobalCellGenotype, input_channels: int, num_classes: int, channels: int,
                 auxiliary: bool = False) -> None:
        super().__init__()
        self.genotype = genotype
        cells = genotype.num_cells
        self.stem = stem(input_channels, STEM_MULTIPLIER * channels)
        self.cells = nn.ModuleList()
        self.aux_at = 2 * cells // 3
        for k, plan in enumerate(cell_plan(channels, cells, lambda reduction: len(NODES))):
            self.cells.append(GenotypeCell(genotype.cells[k], NODES, *plan))
            if k == self.aux_at and auxiliary:
                self.auxiliary = AuxiliaryHead(len(NODES) * plan.c, num_classes)
        self.classifier = nn.Linear(len(NODES) * plan.c, num_classes)

    def set_drop_path(self, p: float) -> None:
        for cell in self.cells:
            cell.drop.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        s0 = s1 = self.stem(x)
        auxiliary = None
        for k, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1)
            if k == self.aux_at and self.training and hasattr(self, "auxiliary") and len(s1) > 1:
                auxiliary = self.auxiliary(s1)
        logits = self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))
        return logits if auxiliary is None else (logits, auxiliary)
