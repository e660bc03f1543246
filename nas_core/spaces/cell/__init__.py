"""The DARTS cell search space, registered as ``"cell"``: genotypes, op sets
and the DARTS derivation rule (genotype.py), candidate ops (ops.py), the
final network and the parts the search supernet shares (network.py), the
32-entry encoding, sampling and Eq. 9 (sampling.py), pictures (render.py)
and the SearchSpace itself (space.py)."""
from nas_core.spaces.cell.genotype import (EDGES, KINDS, NODES, NUM_EDGES, NUM_INPUTS, NUM_NODES, OP_SETS, SKIP,
                                           ZERO, Cell, CellGenotype, cap_skips, derive_cell, derive_genotype,
                                           edge_index, node_edges, op_set)
from nas_core.spaces.cell.network import (CellNetwork, CellPlan, DropPath, GenotypeCell, cell_plan,
                                          channel_shuffle, preprocess,
                                          reduction_layers, stem)
from nas_core.spaces.cell.ops import CELL_OPS, make_op
from nas_core.spaces.cell.render import plot_cell_probabilities, render_cell, render_genotype
from nas_core.spaces.cell.sampling import (HALF_WIDTH, PICKS, ROW_WIDTH, cell_arch_scores, check_cell_rows,
                                           genotype_to_row, row_to_genotype, sample_cell_archs)
from nas_core.spaces.cell.space import CellConfig, CellSpace

__all__ = ["CellSpace", "CellConfig", "CellGenotype", "Cell", "OP_SETS", "op_set", "CELL_OPS", "make_op",
           "EDGES", "NUM_EDGES", "NUM_INPUTS", "NUM_NODES", "NODES", "KINDS", "ZERO", "SKIP", "edge_index",
           "node_edges", "derive_cell", "derive_genotype", "cap_skips", "CellNetwork", "GenotypeCell", "DropPath",
           "CellPlan", "cell_plan", "channel_shuffle", "preprocess", "reduction_layers", "stem",
           "render_cell", "render_genotype", "plot_cell_probabilities", "ROW_WIDTH",
           "HALF_WIDTH", "PICKS", "sample_cell_archs", "cell_arch_scores", "check_cell_rows", "genotype_to_row",
           "row_to_genotype"]
