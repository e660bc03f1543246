"""The layer-wise (FBNet) search space, registered as ``"layerwise"``:
macro-architecture and presets (space.py), the nine candidate blocks
(ops.py), genotypes (genotype.py), the stand-alone network (network.py),
analytic cost (cost.py), the measured latency table (latency.py),
probability tables (tables.py) and pictures (plots.py)."""
from nas_core.spaces.layerwise.cost import genotype_cost, op_cost, op_flops_table, supernet_cost
from nas_core.spaces.layerwise.genotype import LayerwiseGenotype
from nas_core.spaces.layerwise.latency import (LATENCY_FILE, LatencyTable, flops_latency_table,
                                               measure_latency_table)
from nas_core.spaces.layerwise.network import LayerwiseNet, make_head, make_stem
from nas_core.spaces.layerwise.ops import FBNET_OP_NAMES, OPS, BlockOp, build_op
from nas_core.spaces.layerwise.plots import theta_heatmap
from nas_core.spaces.layerwise.space import (AUTO_PRESET, FBNET_PRESETS, FbnetPreset, LayerSpec, LayerwiseConfig,
                                             LayerwiseSpace, auto_preset, resolve_preset)

__all__ = ["LayerwiseSpace", "LayerwiseConfig", "LayerwiseGenotype", "LayerSpec", "FbnetPreset", "FBNET_PRESETS",
           "AUTO_PRESET", "auto_preset", "resolve_preset",
           "FBNET_OP_NAMES", "OPS", "BlockOp", "build_op", "LayerwiseNet", "make_stem", "make_head",
           "LatencyTable", "LATENCY_FILE", "measure_latency_table", "flops_latency_table", "genotype_cost",
           "op_cost", "op_flops_table", "supernet_cost", "theta_heatmap"]
