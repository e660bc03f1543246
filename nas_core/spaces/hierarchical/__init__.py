"""The hierarchical space (Liu et al., ICLR 2018; nas-survey.md Fig. 4),
registered as ``hierarchical``."""
from nas_core.spaces.hierarchical.genotype import PRIMITIVES, HierarchicalGenotype
from nas_core.spaces.hierarchical.network import HierarchicalNet
from nas_core.spaces.hierarchical.space import HierarchicalConfig, HierarchicalSpace

__all__ = ["PRIMITIVES", "HierarchicalConfig", "HierarchicalGenotype", "HierarchicalNet", "HierarchicalSpace"]
