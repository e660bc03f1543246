"""Search spaces and their op tables, looked up by name (STYLE.md 2)."""
from __future__ import annotations

from typing import Any, Callable

from nas_core.registry import Registry
from nas_core.spaces.genotype import Genotype, GenotypeError
from nas_core.spaces.layerwise import FBNET_PRESETS, LayerSpec, LayerwiseSpace, fbnet_space
from nas_core.spaces.ops import FBNET_OP_NAMES, OPS, BlockOp, build_op

#: Space factories: ``factory(preset, input_shape, num_classes) -> space``.
SPACES: Registry[Callable[..., Any]] = Registry("search space")
SPACES.register("fbnet")(fbnet_space)
#: Spaces with a weight-sharing supernet (what the pretrain stage trains).
SUPERNET_SPACES = ("fbnet",)


def make_space(name: str, preset: str, input_shape: tuple[int, int, int], num_classes: int) -> LayerwiseSpace:
    """Build the registered space ``name`` for one preset and data shape."""
    return SPACES.get(name)(preset, tuple(input_shape), int(num_classes))


from nas_core.spaces import channel_ratio  # noqa: E402,F401  (registers "channel_ratio")

__all__ = ["SPACES", "SUPERNET_SPACES", "OPS", "make_space", "Genotype", "GenotypeError", "LayerSpec", "LayerwiseSpace",
           "FBNET_PRESETS", "FBNET_OP_NAMES", "BlockOp", "build_op", "fbnet_space"]
