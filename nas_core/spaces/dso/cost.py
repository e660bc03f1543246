"""Analytic cost of DSO-NAS networks, per image (conventions in
nas_core.spaces.dso.ops: ``flops`` multiply-adds of convs and the
classifier; ``mac`` input + output feature maps + weights, in elements, of
every conv, pooling and linear layer; ``params`` every learnable scalar).

The per-block and per-op figures are what the budgets of §3.4 read during
search: :func:`block_cost` (Eq. 17's FLOPs of the kept operations of a
block) and :func:`op_macs` (Eq. 18's MAC of each operation)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from nas_core.spaces.dso.graph import BlockGraph
from nas_core.spaces.dso.network import LayerSpec, final_channels, half
from nas_core.spaces.dso.ops import DSOCost, conv_layer_cost, op_cost


def reduce_cost(inputs: int, channels: int, hw: tuple[int, int]) -> DSOCost:
    """R: 1×1 conv from ``inputs``·C concatenated channels to C (+ BN)."""
    if inputs == 0:
        return DSOCost()
    return conv_layer_cost(inputs * channels, channels, 1, 1, hw, hw)


def block_cost(graph: BlockGraph, used: np.ndarray, channels: int, hw: tuple[int, int]) -> DSOCost:
    """A normal block under the used-connection mask ``used`` (E,): its
    live ops and R over the nodes that feed the output."""
    used = np.asarray(used, dtype=bool)
    nodes = {int(graph.targets[e]) for e in np.flatnonzero(used)} - {graph.output}
    total = sum((op_cost(graph.op_of(n), channels, hw) for n in sorted(nodes)), DSOCost())
    feeding = int((used & (graph.targets == graph.output)).sum())
    return total + reduce_cost(feeding, channels, hw)


def op_macs(graph: BlockGraph, used: np.ndarray, channels: int, hw: tuple[int, int]) -> np.ndarray:
    """(M·N + 2,) MAC per node of a block: op nodes at their own MAC (live or
    not: the MAC the op costs while it is kept), the output at R's MAC over
    the nodes that currently feed it, the input 0."""
    macs = np.zeros(graph.num_nodes + 2)
    for node in range(1, graph.num_nodes + 1):
        macs[node] = op_cost(graph.op_of(node), channels, hw).mac
    feeding = int((np.asarray(used, dtype=bool) & (graph.targets == graph.output)).sum())
    macs[graph.output] = reduce_cost(feeding, channels, hw).mac
    return macs


def reduction_cost(channels: int, hw: tuple[int, int]) -> DSOCost:
    out = half(hw)
    return (conv_layer_cost(channels, 2 * channels, 1, 1, hw, out)
            + conv_layer_cost(channels, 2 * channels, 3, 1, hw, out))


def stem_cost(in_channels: int, channels: int, hw: tuple[int, int]) -> DSOCost:
    return conv_layer_cost(in_channels, channels, 3, 1, hw, hw)


def head_cost(channels: int, hw: tuple[int, int], num_classes: int) -> DSOCost:
    """Global average pool (input map + C outputs) and the linear layer."""
    weights = channels * num_classes + num_classes
    gap = channels * hw[0] * hw[1] + channels
    return DSOCost(flops=channels * num_classes, mac=gap + channels + num_classes + weights, params=weights)


def network_cost(graph: BlockGraph, layers: Sequence[LayerSpec], in_channels: int, num_classes: int,
                 used: np.ndarray) -> DSOCost:
    """The whole network; ``used`` (blocks, E) per normal block."""
    total = stem_cost(in_channels, layers[0].channels, layers[0].hw)
    for spec in layers:
        if spec.kind == "reduction":
            total = total + reduction_cost(spec.channels, spec.hw)
        else:
            total = total + block_cost(graph, used[spec.index], spec.channels, spec.hw)
    last = layers[-1]
    hw = half(last.hw) if last.kind == "reduction" else last.hw
    return total + head_cost(final_channels(layers), hw, num_classes)
