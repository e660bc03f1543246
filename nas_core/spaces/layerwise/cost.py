"""Analytic FLOPs and parameter counts of the layer-wise space, per image
(the conventions of nas_core.cost: ``flops`` = multiply-adds of convs and
fc layers; ``params`` = every learnable scalar). FlopCounterMode reports
exactly ``2 * flops`` of the built networks (tests check this)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from nas_core.cost import ZERO, Cost, conv_cost
from nas_core.spaces.layerwise.genotype import LayerwiseGenotype
from nas_core.spaces.layerwise.ops import OPS

if TYPE_CHECKING:
    from nas_core.spaces.layerwise.space import LayerwiseSpace


def op_cost(space: "LayerwiseSpace", layer_index: int, op_name: str) -> Cost:
    """Cost of candidate ``op_name`` in layer ``layer_index`` (stride on the
    first 1x1 conv, so every conv of a block runs at the output size)."""
    if not 0 <= layer_index < space.num_layers:
        raise ValueError(f"layer_index = {layer_index}: allowed 0..{space.num_layers - 1}")
    space.op_index(op_name)
    op, spec = OPS.get(op_name), space.layers[layer_index]
    out_hw = space.layer_output_hw(layer_index)
    if op.is_skip:
        if spec.stride == 1 and spec.in_channels == spec.out_channels:
            return ZERO
        return conv_cost(spec.in_channels, spec.out_channels, 1, 1, out_hw)
    mid = spec.in_channels * op.expansion
    return (conv_cost(spec.in_channels, mid, 1, op.groups, out_hw)
            + conv_cost(mid, mid, op.kernel, mid, out_hw)
            + conv_cost(mid, spec.out_channels, 1, op.groups, out_hw))


def stem_cost(space: "LayerwiseSpace") -> Cost:
    return conv_cost(space.input_shape[0], space.stem_channels, 3, 1, space.stem_hw())


def head_cost(space: "LayerwiseSpace") -> Cost:
    """1x1 conv + BN, then fc (weights + bias)."""
    last = space.layers[-1].out_channels
    fc = Cost(space.head_channels * space.num_classes,
              space.head_channels * space.num_classes + space.num_classes)
    return conv_cost(last, space.head_channels, 1, 1, space.final_hw()) + fc


def fixed_cost(space: "LayerwiseSpace") -> Cost:
    """The parts every architecture shares: stem and head."""
    return stem_cost(space) + head_cost(space)


def genotype_cost(space: "LayerwiseSpace", genotype: LayerwiseGenotype) -> Cost:
    """Whole network: stem + the chosen block per layer + head."""
    genotype.check(space)
    total = fixed_cost(space)
    for index, op in enumerate(genotype.ops):
        total = total + op_cost(space, index, op)
    return total


def supernet_cost(space: "LayerwiseSpace") -> Cost:
    """Stem + every candidate of every layer + head (one mixture forward)."""
    total = fixed_cost(space)
    for index in range(space.num_layers):
        for op in space.op_names:
            total = total + op_cost(space, index, op)
    return total


def op_flops_table(space: "LayerwiseSpace") -> list[list[int]]:
    """Multiply-adds of every (layer, op), rows in layer order."""
    return [[op_cost(space, i, op).flops for op in space.op_names] for i in range(space.num_layers)]
