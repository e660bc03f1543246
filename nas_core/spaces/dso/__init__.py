"""The DSO-NAS search space (dso-nas.md §3.1), registered as ``"dso"``:
block connections (graph.py), ops and their cost (ops.py), networks
(network.py), analytic FLOPs / MAC / params (cost.py), the measured
latency model (latency.py), genotypes (genotype.py), pictures (plots.py)
and the SearchSpace (space.py)."""
from nas_core.spaces.dso.cost import block_cost, network_cost, op_macs
from nas_core.spaces.dso.genotype import DSOGenotype
from nas_core.spaces.dso.graph import BlockGraph
from nas_core.spaces.dso.latency import DSOLatencyTable, measure_latency_table
from nas_core.spaces.dso.network import DSOBlock, DSONetwork, LayerSpec, ReductionBlock, make_head, make_stem
from nas_core.spaces.dso.ops import DSO_OPS, DSOCost, make_op, op_cost
from nas_core.spaces.dso.space import DSOConfig, DSOSpace

__all__ = ["BlockGraph", "DSOBlock", "DSOConfig", "DSOCost", "DSOGenotype", "DSOLatencyTable", "DSONetwork",
           "DSOSpace", "DSO_OPS", "LayerSpec", "ReductionBlock", "block_cost", "make_head", "make_op", "make_stem",
           "measure_latency_table", "network_cost", "op_cost", "op_macs"]
