"""Supernets over the search spaces and the child-network builder."""
from nas_core.supernet.layerwise import LayerwiseNet, LayerwiseSupernet, MixedLayer, build_child

__all__ = ["LayerwiseSupernet", "LayerwiseNet", "MixedLayer", "build_child"]
