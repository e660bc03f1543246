"""Measured latency of DSO-NAS networks, for the *adaptive latency* budget
(dso-nas.md §3.4, Eq. 19) and ``latency_ms`` in the space's cost.

The paper assumes "the expected latency of a network is the sum of every
connection's latency", the latency of a connection being how much the
network's latency drops when it is removed. Here a network's latency is
modelled as the sum of measured parts (the layer-wise space's approach,
built on the same :func:`nas_core.cost.time_module`):

* every distinct (op, channels, H×W) of a normal block, timed alone;
* R (1×1 conv + BN) over n concatenated nodes, timed at n = 1 and
  n = M·N and interpolated linearly in n (its cost is linear in n);
* a fixed part: stem, reduction blocks and head.

The drop of a connection (:meth:`DSOLatencyTable.connection_drops`) is the
network's modelled latency minus that latency without the connection:
the ops of the nodes it leaves isolated and the change of R. Measuring runs
under ``torch.random.fork_rng`` and is saved as a stage output
(``dso_latency.json``) that later stages reuse while it fits the space and
device (:func:`load_or_measure`).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

import numpy as np
import torch
from torch import nn

from nas_core.cost import time_module
from nas_core.io import write_text
from nas_core.spaces.dso.graph import BlockGraph
from nas_core.spaces.dso.network import LayerSpec, ReductionBlock, final_channels, make_head, make_stem
from nas_core.spaces.dso.ops import make_op


class DSOSpace(Protocol):
    """What a latency table reads of the DSO space (nas_core.spaces.dso.space,
    which imports this module)."""

    levels: int
    ops: tuple[str, ...]
    stages: int
    blocks_per_stage: int
    init_channels: int
    input_shape: tuple[int, ...]
    num_classes: int
    graph: BlockGraph

    def layers(self, width_multiplier: float = 1.0) -> tuple[LayerSpec, ...]: ...

    def block_masks(self, kept: np.ndarray) -> np.ndarray: ...

LATENCY_FILE = "dso_latency.json"


def _shape_key(channels: int, hw: tuple[int, int]) -> str:
    return f"{channels}x{hw[0]}x{hw[1]}"


@dataclass(frozen=True, eq=False)
class DSOLatencyTable:
    """``op_ms[op][shape]``, ``reduce_ms[shape]`` = (ms at n = 1, ms at
    n = M·N), ``fixed_ms``; ``space_key`` identifies the space measured."""

    space_key: str
    device: str
    op_ms: dict[str, dict[str, float]]
    reduce_ms: dict[str, tuple[float, float]]
    fixed_ms: float

    def block_ms(self, graph: BlockGraph, used: np.ndarray, channels: int, hw: tuple[int, int]) -> float:
        """A normal block under the used-connection mask ``used``."""
        shape = _shape_key(channels, hw)
        nodes = {int(graph.targets[e]) for e in np.flatnonzero(used)} - {graph.output}
        total = sum(self.op_ms[graph.op_of(n)][shape] for n in nodes)
        feeding = int((np.asarray(used, dtype=bool) & (graph.targets == graph.output)).sum())
        if feeding:
            one, every = self.reduce_ms[shape]
            total += one + (every - one) * (feeding - 1) / max(graph.num_nodes - 1, 1)
        return float(total)

    def network_ms(self, space: DSOSpace, kept: np.ndarray) -> float:
        used, graph = space.block_masks(kept), space.graph
        blocks = sum(self.block_ms(graph, used[s.index], s.channels, s.hw) for s in space.layers()
                     if s.kind == "block")
        return self.fixed_ms + blocks

    def connection_drops(self, space: DSOSpace, kept: np.ndarray) -> np.ndarray:
        """(structures, E) ms the network loses when one kept connection is
        removed (0 for connections already pruned)."""
        kept = np.asarray(kept, dtype=bool)
        base = self.network_ms(space, kept)
        drops = np.zeros(kept.shape)
        for s, e in zip(*np.nonzero(kept)):
            without = kept.copy()
            without[s, e] = False
            drops[s, e] = base - self.network_ms(space, without)
        return drops

    def to_json(self) -> str:
        return json.dumps({"space_key": self.space_key, "device": self.device, "unit": "ms", "op_ms": self.op_ms,
                           "reduce_ms": {k: list(v) for k, v in self.reduce_ms.items()},
                           "fixed_ms": self.fixed_ms}, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "DSOLatencyTable":
        obj = json.loads(text)
        return cls(obj["space_key"], obj["device"], obj["op_ms"],
                   {k: (float(v[0]), float(v[1])) for k, v in obj["reduce_ms"].items()}, float(obj["fixed_ms"]))


def space_key(space: DSOSpace) -> str:
    """What a table depends on: the search network's layout, ops and input."""
    parts = (space.levels, space.ops, space.stages, space.blocks_per_stage, space.init_channels,
             space.input_shape, space.num_classes)
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def measure_latency_table(space: DSOSpace, device: torch.device | str, repeats: int = 5,
                          progress: Optional[Callable[..., Any]] = None) -> DSOLatencyTable:
    device = torch.device(device)
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(0)
        return _measure(space, device, repeats, progress)


def _time(module: nn.Module, shape: tuple[int, ...], device: torch.device, repeats: int) -> float:
    return time_module(module.to(device), torch.randn(1, *shape, device=device), repeats)


def _measure(space: DSOSpace, device: torch.device, repeats: int,
             progress: Optional[Callable[..., Any]]) -> DSOLatencyTable:
    graph, layers = space.graph, space.layers()
    shapes = sorted({(s.channels, s.hw) for s in layers if s.kind == "block"})
    items = progress(shapes, desc="dso latency table", total=len(shapes)) if progress else shapes
    op_ms: dict[str, dict[str, float]] = {op: {} for op in graph.ops}
    reduce_ms: dict[str, tuple[float, float]] = {}
    for channels, hw in items:
        key = _shape_key(channels, hw)
        for op in graph.ops:
            op_ms[op][key] = _time(make_op(op, channels), (channels, *hw), device, repeats)
        reduce_ms[key] = tuple(_time(nn.Sequential(nn.Conv2d(n * channels, channels, 1, bias=False),
                                                   nn.BatchNorm2d(channels)), (n * channels, *hw), device, repeats)
                               for n in (1, graph.num_nodes))
    first = layers[0]
    fixed = _time(make_stem(space.input_shape[0], first.channels), space.input_shape, device, repeats)
    fixed += sum(_time(ReductionBlock(s.channels), (s.channels, *s.hw), device, repeats)
                 for s in layers if s.kind == "reduction")
    last = layers[-1]
    hw = last.hw if last.kind == "block" else ((last.hw[0] - 1) // 2 + 1, (last.hw[1] - 1) // 2 + 1)
    fixed += _time(make_head(final_channels(layers), space.num_classes), (final_channels(layers), *hw), device,
                   repeats)
    return DSOLatencyTable(space_key(space), str(device), op_ms, reduce_ms, fixed)


def load_or_measure(space: DSOSpace, directory: Path, device: torch.device, measure: bool,
                    repeats: int = 5, progress: Optional[Callable[..., Any]] = None) -> Optional[DSOLatencyTable]:
    """The fitting ``directory/dso_latency.json``; else, with ``measure``, a
    new measurement saved there; else None."""
    path = Path(directory) / LATENCY_FILE
    if path.is_file():
        try:
            table = DSOLatencyTable.from_json(path.read_text())
        except (KeyError, ValueError, TypeError, IndexError):
            table = None
        if table is not None and table.space_key == space_key(space) and table.device == str(device):
            return table
    if not measure:
        return None
    table = measure_latency_table(space, device, repeats, progress)
    write_text(path, table.to_json() + "\n")
    return table
