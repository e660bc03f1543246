"""Supernets over the search spaces (the Supernet protocol: nas_core.supernet.base)."""
from nas_core.supernet.base import Supernet
from nas_core.supernet.cell import SearchNetwork
from nas_core.supernet.layerwise import LayerwiseSupernet, MixedLayer

__all__ = ["Supernet", "LayerwiseSupernet", "MixedLayer", "SearchNetwork"]
