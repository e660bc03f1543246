"""Cost model of the layer-wise space: analytic FLOPs/params and a measured
latency lookup table."""
from nas_core.cost.flops import (Cost, fixed_cost, genotype_cost, head_cost, op_cost, op_flops_table,
                                 stem_cost, supernet_cost)
from nas_core.cost.latency import LatencyTable, flops_latency_table, measure_latency_table

__all__ = ["Cost", "op_cost", "genotype_cost", "fixed_cost", "stem_cost", "head_cost", "supernet_cost",
           "op_flops_table", "LatencyTable", "measure_latency_table", "flops_latency_table"]
