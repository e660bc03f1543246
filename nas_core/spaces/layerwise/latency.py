"""Latency lookup table of the layer-wise space, measured on a device
(FBNet §3.2: LAT(a) = sum_l LAT(b_l) from a per-op table).

Measurement: each candidate block of each layer is built alone, in eval
mode, and timed on one image of that layer's input shape by
:func:`nas_core.cost.time_module` (the minimum per-call time over
``repeats`` timings of ``number`` calls). Layers with the same (channels,
stride, spatial size) share one measurement. Measuring runs under
``torch.random.fork_rng``, so it does not move the global RNG.

The table is a stage output (``latency.json``), so a resumed or later stage
uses the same numbers rather than a fresh, noisy measurement
(:func:`load_or_measure`: reused while it fits the space and the device).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from nas_core.cost import time_module
from nas_core.io import write_text
from nas_core.spaces.layerwise.cost import op_flops_table
from nas_core.spaces.layerwise.genotype import LayerwiseGenotype
from nas_core.spaces.layerwise.network import make_head, make_stem
from nas_core.spaces.layerwise.ops import build_op

if TYPE_CHECKING:
    from nas_core.spaces.layerwise.space import LayerwiseSpace

LATENCY_FILE = "latency.json"


@dataclass(frozen=True, eq=False)
class LatencyTable:
    """``ms[l, i]``: latency of op ``op_names[i]`` in layer l; ``fixed_ms``:
    stem + head, which every architecture shares. Tables are equal when
    their JSON is (:meth:`digest`)."""

    space: str
    preset: str
    input_shape: tuple[int, int, int]
    op_names: tuple[str, ...]
    device: str
    ms: np.ndarray
    fixed_ms: float = 0.0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LatencyTable) and self.digest() == other.digest()

    def __hash__(self) -> int:
        return hash(self.digest())

    def digest(self) -> str:
        """sha256 of the table's JSON (resume guards)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def check(self, space: "LayerwiseSpace") -> None:
        want = (space.name, space.preset, tuple(space.input_shape), tuple(space.op_names))
        have = (self.space, self.preset, tuple(self.input_shape), tuple(self.op_names))
        if want != have or self.ms.shape != (space.num_layers, space.num_ops):
            raise ValueError(f"latency table is for {have[:3]} with shape {self.ms.shape}; "
                             f"the space is {want[:3]} with {space.num_layers} x {space.num_ops} ops")

    def tensor(self, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.as_tensor(self.ms, dtype=torch.float32, device=device)

    def genotype_ms(self, genotype: LayerwiseGenotype) -> float:
        """Latency of a whole network: fixed part + its op per layer."""
        cols = genotype.indices(self.op_names)
        return float(self.fixed_ms + sum(self.ms[l, c] for l, c in enumerate(cols)))

    def expected_ms(self, probabilities: np.ndarray | torch.Tensor) -> float:
        """sum_l sum_i p_{l,i} LAT_{l,i} (blocks only, as FBNet's loss)."""
        p = probabilities.detach().cpu().numpy() if isinstance(probabilities, torch.Tensor) else probabilities
        return float((np.asarray(p, dtype=np.float64) * self.ms).sum())

    def to_dict(self) -> dict[str, Any]:
        return {"space": self.space, "preset": self.preset, "input_shape": list(self.input_shape),
                "op_names": list(self.op_names), "device": self.device, "unit": "ms",
                "fixed_ms": self.fixed_ms, "ms": self.ms.tolist()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "LatencyTable":
        obj = json.loads(text)
        ms = np.asarray(obj["ms"], dtype=np.float64)
        if ms.ndim != 2 or ms.shape[1] != len(obj["op_names"]) or not np.isfinite(ms).all() or (ms < 0).any():
            raise ValueError(f"latency table 'ms' must be a finite, non-negative layers x "
                             f"{len(obj['op_names'])} array, got shape {ms.shape}")
        return cls(obj["space"], obj["preset"], tuple(obj["input_shape"]), tuple(obj["op_names"]),
                   obj["device"], ms, float(obj.get("fixed_ms", 0.0)))

    def save(self, path: str | Path) -> None:
        write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "LatencyTable":
        path = Path(path)
        try:
            return cls.from_json(path.read_text())
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}: not a valid latency table ({exc})") from None


def fitting_table(path: Path, space: "LayerwiseSpace", device: torch.device) -> Optional[LatencyTable]:
    """The table stored at ``path`` when it is readable, fits ``space`` and
    was measured on ``device``; else None."""
    if not path.is_file():
        return None
    try:
        table = LatencyTable.load(path)
        table.check(space)
    except ValueError:  # unreadable or for another space: measure again
        return None
    return table if table.device == str(device) else None


def load_or_measure(space: "LayerwiseSpace", directory: Path, device: torch.device, measure: bool,
                    progress: Callable[..., Any] | None = None) -> Optional[LatencyTable]:
    """The fitting ``directory/latency.json``; else, with ``measure``, a new
    measurement saved there (before anything trains with it); else None."""
    path = directory / LATENCY_FILE
    table = fitting_table(path, space, device)
    if table is None and measure:
        table = measure_latency_table(space, device, space.latency_repeats, progress=progress)
        table.save(path)
    return table


def measure_latency_table(space: "LayerwiseSpace", device: torch.device | str, repeats: int = 5,
                          number: int = 10, progress: Callable[..., Any] | None = None) -> LatencyTable:
    """Measure every (layer, op) on ``device`` (see the module docstring)."""
    device = torch.device(device)
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):  # building the ops draws initial weights
        return _measure(space, device, repeats, number, progress)


def _measure(space: "LayerwiseSpace", device: torch.device, repeats: int, number: int,
             progress: Callable[..., Any] | None) -> LatencyTable:
    gen = torch.Generator().manual_seed(0)
    cache: dict[tuple, float] = {}
    ms = np.zeros((space.num_layers, space.num_ops))
    rows = range(space.num_layers)
    for l in (progress(rows, desc="latency table", total=space.num_layers) if progress else rows):
        spec, (h, w) = space.layers[l], space.layer_input_hw(l)
        x = torch.randn(1, spec.in_channels, h, w, generator=gen).to(device)
        for i, name in enumerate(space.op_names):
            key = (name, spec, h, w)
            if key not in cache:
                op = build_op(name, spec.in_channels, spec.out_channels, spec.stride).to(device)
                cache[key] = time_module(op, x, repeats, number)
            ms[l, i] = cache[key]
    x = torch.randn(1, *space.input_shape, generator=gen).to(device)
    fixed = time_module(nn.Sequential(make_stem(space), _Blocks(space), make_head(space)).to(device),
                        x, repeats, number) if space.num_layers else 0.0
    return LatencyTable(space.name, space.preset, tuple(space.input_shape), tuple(space.op_names),
                        str(device), ms, fixed)


class _Blocks(nn.Module):
    """Shape adapter between stem and head for timing the fixed part: a
    strided average pool + channel padding costs next to nothing."""

    def __init__(self, space: "LayerwiseSpace") -> None:
        super().__init__()
        self.size = space.final_hw()
        self.pad = space.layers[-1].out_channels - space.stem_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(x, self.size)
        if self.pad >= 0:
            return nn.functional.pad(x, (0, 0, 0, 0, 0, self.pad))
        return x[:, : x.shape[1] + self.pad]


def flops_latency_table(space: "LayerwiseSpace", gflops_per_s: float = 10.0,
                        overhead_ms: float = 0.01) -> LatencyTable:
    """A deterministic stand-in table: ms = multiply-adds / speed +
    overhead. For tests and benchmarks that need identical tables across
    processes; stages always measure."""
    flops = np.asarray(op_flops_table(space), dtype=np.float64)
    ms = flops / (gflops_per_s * 1e6) + overhead_ms
    return LatencyTable(space.name, space.preset, tuple(space.input_shape), tuple(space.op_names),
                        "analytic", ms, overhead_ms)
