"""The final network of a global genotype: DARTS's evaluation network
(nas_core.spaces.cell.network: stem, cells with reductions at L // 3 and
2L // 3, global pooling, linear classifier, drop path, auxiliary head) in
which cell k is the genotype's k-th cell instead of one of two shared
cells. The depth is the genotype's L (a global architecture is searched at
its final depth); the width is the space's ``final_channels``."""
from __future__ import annotations

from torch import nn

from nas_core.spaces.cell import NODES, GenotypeCell, cell_plan, stem
from nas_core.spaces.cell.network import STEM_MULTIPLIER, AuxiliaryHead, CellStack
from nas_core.spaces.global_cell.genotype import GlobalCellGenotype


class GlobalCellNetwork(CellStack):
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
