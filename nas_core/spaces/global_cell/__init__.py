"""The global cell space of DNAS-CAM, registered as ``"global_cell"``: a
stack of L DARTS cells that may all differ. Genotypes and the per-cell
DARTS rule (genotype.py), the final network (network.py), per-layer tables,
sampling and Eq. 9 (tables.py), the Fig. 5 picture (render.py) and the
SearchSpace (space.py). Ops, cells and sampling are the cell space's."""
from nas_core.spaces.global_cell.genotype import GlobalCellGenotype, derive_global, kind_at
from nas_core.spaces.global_cell.network import GlobalCellNetwork
from nas_core.spaces.global_cell.space import GlobalCellConfig, GlobalCellSpace
from nas_core.spaces.global_cell.tables import check_global_rows

__all__ = ["GlobalCellSpace", "GlobalCellConfig", "GlobalCellGenotype", "GlobalCellNetwork", "derive_global",
           "kind_at", "check_global_rows"]
