"""Generic cost measures (no search space inside): multiply-adds and
parameters (analytic per conv, or counted on a module) and measured
latency of a module. Space-specific cost models live in the space's
package (e.g. nas_core.spaces.layerwise.cost / .latency)."""
from nas_core.cost.flops import ZERO, Cost, conv_cost, module_cost
from nas_core.cost.latency import time_module

__all__ = ["Cost", "ZERO", "conv_cost", "module_cost", "time_module"]
