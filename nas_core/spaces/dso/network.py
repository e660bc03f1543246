"""DSO-NAS networks (dso-nas.md §3.1, Fig. 2): a stem, S stages of B
blocks, a reduction block after every stage but the last, global average
pooling and a linear classifier.

* stem: 3×3 conv + BatchNorm (DARTS's CIFAR stem, which the paper follows);
* block (Eq. 1-2, 8): op node k computes ``O_k(Σ_e λ_e h_src(e))`` over its
  used incoming connections; the output concatenates ``λ_e h_src(e)`` of the
  used connections into the output, applies the reduction op R (1×1 conv +
  BatchNorm) and adds the block input (the identity that keeps a block
  valid when everything is pruned: then the block is the identity);
* reduction block: 1×1 and 3×3 stride-2 convs (each conv-BN-ReLU) summed,
  doubling the channels.

:class:`DSOBlock` serves both the supernet (every node built, R over all
M·N nodes, any connection mask at run time: R uses the weight columns of the
nodes it reads) and the stand-alone network of a genotype (only live nodes
built, R over the nodes that feed the output). The stand-alone network has
per-connection ``edge_scales`` buffers, 1 for a genotype's network (Eq. 6's
binary λ); :func:`nas_core.supernet.dso.export_network` folds the searched λ
into them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas_core.spaces.dso.graph import INPUT, BlockGraph
from nas_core.spaces.dso.ops import make_op

_PLAN_CACHE = 64


@dataclass(frozen=True)
class LayerSpec:
    """One layer of the network: a normal ``block`` (``index``: its number
    among the normal blocks) or a ``reduction``, on ``channels``×``hw`` input."""

    kind: str
    channels: int
    hw: tuple[int, int]
    index: int = -1


def half(hw: tuple[int, int]) -> tuple[int, int]:
    """Spatial size after a stride-2 conv of kernel 1 (pad 0) or 3 (pad 1)."""
    return ((hw[0] - 1) // 2 + 1, (hw[1] - 1) // 2 + 1)


def layout(stages: int, blocks_per_stage: int, channels: int, hw: tuple[int, int]) -> tuple[LayerSpec, ...]:
    """The layers after the stem, in order."""
    layers, index = [], 0
    for stage in range(stages):
        for _ in range(blocks_per_stage):
            layers.append(LayerSpec("block", channels, hw, index))
            index += 1
        if stage < stages - 1:
            layers.append(LayerSpec("reduction", channels, hw))
            channels, hw = 2 * channels, half(hw)
    return tuple(layers)


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    parts = [nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*parts, nn.ReLU()) if relu else nn.Sequential(*parts)


class ReductionBlock(nn.Module):
    """1×1 and 3×3 stride-2 convs (conv-BN-ReLU each), summed; 2× channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(channels, 2 * channels, 1, stride=2)
        self.conv3 = conv_bn(channels, 2 * channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(x) + self.conv3(x)


@dataclass(frozen=True)
class _Plan:
    """How a block runs under one used-connection mask."""

    nodes: tuple[tuple[int, tuple[int, ...]], ...]  # (node, its used incoming edges), in level order
    out_edges: tuple[int, ...]                      # used edges into the output
    columns: Optional[torch.Tensor]                 # R's weight columns (None: all, in order)


class DSOBlock(nn.Module):
    """One block over ``graph`` with ``channels`` channels; ``nodes`` are the
    op nodes built (all for the supernet) and ``out_sources`` the nodes R
    reads, in the order of its input channels."""

    def __init__(self, graph: BlockGraph, channels: int, nodes: Optional[Sequence[int]] = None,
                 out_sources: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        self.graph, self.channels = graph, channels
        everything = range(1, graph.num_nodes + 1)
        self.node_ids = tuple(everything if nodes is None else sorted(int(n) for n in nodes))
        self.out_sources = tuple(everything if out_sources is None else sorted(int(n) for n in out_sources))
        self.ops = nn.ModuleDict({str(n): make_op(graph.op_of(n), channels) for n in self.node_ids})
        self.reduce = nn.Conv2d(channels * len(self.out_sources), channels, 1, bias=False) if self.out_sources \
            else None
        self.reduce_bn = nn.BatchNorm2d(channels) if self.out_sources else None
        self._plans: dict[bytes, _Plan] = {}

    def plan(self, used: np.ndarray) -> _Plan:
        key = np.asarray(used, dtype=bool).tobytes()
        if key not in self._plans:
            if len(self._plans) >= _PLAN_CACHE:
                self._plans.clear()
            self._plans[key] = self._make_plan(np.frombuffer(key, dtype=bool))
        return self._plans[key]

    def _make_plan(self, used: np.ndarray) -> _Plan:
        g = self.graph
        nodes = []
        for node in range(1, g.num_nodes + 1):
            edges = tuple(int(e) for e in g.incoming(node) if used[e])
            if edges:
                if node not in self.node_ids:
                    raise ValueError(f"connection mask uses node {g.node_name(node)}, which this block does not have")
                nodes.append((node, edges))
        out_edges = tuple(int(e) for e in g.incoming(g.output) if used[e])
        missing = [g.node_name(int(g.sources[e])) for e in out_edges if int(g.sources[e]) not in self.out_sources]
        if missing:
            raise ValueError(f"connection mask feeds {missing} into the output, which R of this block does not read")
        cols = [i for e in out_edges for i in self._channels_of(int(g.sources[e]))]
        everything = len(cols) == len(self.out_sources) * self.channels
        return _Plan(tuple(nodes), out_edges, None if everything else torch.tensor(cols, dtype=torch.long))

    def _channels_of(self, node: int) -> range:
        start = self.out_sources.index(node) * self.channels
        return range(start, start + self.channels)

    def forward(self, x: torch.Tensor, scales: torch.Tensor, used: np.ndarray) -> torch.Tensor:
        """Eq. 8 with λ = ``scales`` (E,) on the ``used`` connections (E,)."""
        plan = self.plan(used)
        sources = self.graph.sources
        h = {INPUT: x}
        for node, edges in plan.nodes:
            total = sum(scales[e] * h[int(sources[e])] for e in edges)
            h[node] = self.ops[str(node)](total)
        if not plan.out_edges:
            return x
        cat = torch.cat([scales[e] * h[int(sources[e])] for e in plan.out_edges], dim=1)
        if plan.columns is None:
            y = self.reduce(cat)
        else:
            y = F.conv2d(cat, self.reduce.weight.index_select(1, plan.columns.to(cat.device)))
        return self.reduce_bn(y) + x


def make_stem(in_channels: int, channels: int) -> nn.Sequential:
    return conv_bn(in_channels, channels, 3, relu=False)


def make_head(channels: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


def final_channels(layers: Sequence[LayerSpec]) -> int:
    last = layers[-1]
    return 2 * last.channels if last.kind == "reduction" else last.channels


class DSONetwork(nn.Module):
    """The stand-alone network of a genotype: ``used[b]`` is normal block
    b's used-connection mask (E,) (a live-node closure of the genotype's
    kept set); ``edge_scales`` (blocks, E) multiply the connections (1 here)."""

    def __init__(self, graph: BlockGraph, layers: Sequence[LayerSpec], in_channels: int, num_classes: int,
                 used: np.ndarray) -> None:
        super().__init__()
        self.graph = graph
        self.used = np.asarray(used, dtype=bool)
        self.stem = make_stem(in_channels, layers[0].channels)
        self.cells = nn.ModuleList(self._layer(spec) for spec in layers)
        self.kinds = tuple(spec.kind for spec in layers)
        self.block_index = tuple(spec.index for spec in layers)
        self.head = make_head(final_channels(layers), num_classes)
        self.register_buffer("edge_scales", torch.ones(self.used.shape, dtype=torch.float32))

    def _layer(self, spec: LayerSpec) -> nn.Module:
        if spec.kind == "reduction":
            return ReductionBlock(spec.channels)
        used, g = self.used[spec.index], self.graph
        nodes = sorted({int(g.targets[e]) for e in np.flatnonzero(used)} - {g.output})
        feeding = [int(g.sources[e]) for e in np.flatnonzero(used) if g.targets[e] == g.output]
        return DSOBlock(g, spec.channels, nodes, feeding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for kind, index, cell in zip(self.kinds, self.block_index, self.cells):
            h = cell(h) if kind == "reduction" else cell(h, self.edge_scales[index], self.used[index])
        return self.head(h)
