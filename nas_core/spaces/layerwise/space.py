"""FBNet's layer-wise search space: a fixed macro-architecture whose
searchable layers each pick one of the nine candidate blocks (ops.py).

Macro-architecture (FBNet Table 1; reference-notes.md)::

    3x3 conv (stem, BN, ReLU) -> searchable layers in stages (f, n, s)
    -> 1x1 conv (head, BN, ReLU) -> global average pool -> fc

A stage ``(f, n, s)`` has ``n`` layers with ``f`` output channels; only its
first layer has stride ``s``. Presets by input size:

* ``imagenet`` — FBNet's macro for 224x224 inputs, 22 searchable layers
  (a 9^22 space).
* ``cifar`` — 32x32 inputs: FBNet's channels, stage depths 4 -> 2 and a
  stride-1 stem and first strided stage, 12 layers.
* ``mnist`` — 28x28 grey inputs: 7 layers, 8-32 channels.
* ``digits`` — scikit-learn's 8x8 digits: 6 layers, 8-32 channels; a
  pre-training epoch on 2 CPU cores takes seconds.
* ``auto`` (the default) — the preset made for the size nearest the data's
  on a log scale, by the smaller image side s (:func:`auto_preset`):

  ======================  =========  ==================
  smaller side s (px)     preset     made for
  ======================  =========  ==================
  s <= 14                 digits     8x8
  15 <= s <= 29           mnist      28x28
  30 <= s <= 84           cifar      32x32
  s >= 85                 imagenet   224x224
  ======================  =========  ==================

  The band edges are the geometric means of neighbouring sizes (sqrt(8*28)
  = 14.97, sqrt(28*32) = 29.9, sqrt(32*224) = 84.7). The channel count does
  not enter: the stem takes any number of input channels. The space (and so
  every genotype, latency table and fingerprint) records the resolved
  preset, never ``auto``. An explicit preset that ``auto`` would not pick
  for the data is allowed; ``nasflow check`` warns about it
  (:meth:`LayerwiseConfig.fit_warnings`).

Every channel count is even so the group-2 blocks apply everywhere.

As a :class:`~nas_core.spaces.base.SearchSpace` (registered as
``"layerwise"``): a genotype is one op per layer
(:class:`LayerwiseGenotype`), its encoding the op index per layer, the
architecture-probability table ``tables["layers"]`` (L, n_ops) (softmax θ
for FBNet), sampled layer by layer (DC-NAS Algorithm 1, line 2) and scored
by Eq. 9 (nas_core.spaces.layer_tables). ``latency`` is FBNet's measured per-(layer, op)
latency table (latency.py), attached by :meth:`with_measurements`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import nn

from nas_core.registry import nearest
from nas_core.sections import Section
from nas_core.spaces.base import SPACES, GenotypeError, Progress, SampleResult, SearchSpace, Tables
from nas_core.spaces.layer_tables import eq9_scores, layers_table, sample_layers, uniform_table
from nas_core.spaces.layerwise import cost as layer_cost
from nas_core.spaces.layerwise import plots
from nas_core.spaces.layerwise.genotype import SPACE_NAME, LayerwiseGenotype
from nas_core.spaces.layerwise.latency import LatencyTable, load_or_measure
from nas_core.spaces.layerwise.network import LayerwiseNet
from nas_core.spaces.layerwise.ops import FBNET_OP_NAMES, OPS


@dataclass(frozen=True)
class LayerSpec:
    in_channels: int
    out_channels: int
    stride: int


@dataclass(frozen=True)
class FbnetPreset:
    """``stages`` holds (channels f, layers n, first stride s) per stage;
    ``input_size`` is the image side the preset is made for."""

    stem_channels: int
    stem_stride: int
    stages: tuple[tuple[int, int, int], ...]
    head_channels: int
    input_size: int


FBNET_PRESETS: Mapping[str, FbnetPreset] = {
    "imagenet": FbnetPreset(16, 2, ((16, 1, 1), (24, 4, 2), (32, 4, 2), (64, 4, 2),
                                    (112, 4, 1), (184, 4, 2), (352, 1, 1)), 1984, 224),
    "cifar": FbnetPreset(16, 1, ((16, 1, 1), (24, 2, 1), (32, 2, 2), (64, 2, 2),
                                 (112, 2, 1), (184, 2, 2), (352, 1, 1)), 1504, 32),
    "mnist": FbnetPreset(8, 1, ((8, 1, 1), (16, 2, 2), (24, 2, 2), (32, 2, 2)), 128, 28),
    "digits": FbnetPreset(8, 1, ((8, 1, 1), (16, 2, 2), (24, 2, 1), (32, 1, 2)), 64, 8),
}

#: ``spaces.layerwise.preset`` value that picks the preset from the input shape.
AUTO_PRESET = "auto"


def auto_preset(input_shape: tuple[int, ...]) -> str:
    """The preset whose ``input_size`` is nearest the smaller side of
    ``input_shape`` (C, H, W) on a log scale (module docstring table)."""
    side = min(int(v) for v in input_shape[-2:])
    return min(FBNET_PRESETS, key=lambda name: abs(math.log(side / FBNET_PRESETS[name].input_size)))


def resolve_preset(preset: str, input_shape: tuple[int, ...]) -> str:
    """``preset``, or :func:`auto_preset` of ``input_shape`` for ``auto``."""
    return auto_preset(input_shape) if preset == AUTO_PRESET else preset


class LayerwiseConfig(Section):
    """``spaces.layerwise``: the macro-architecture preset (``auto``: chosen
    from the input shape, see the module docstring) and how many timings
    per (layer, op) the latency table takes (the minimum counts)."""

    preset: str = AUTO_PRESET
    latency_repeats: int = Field(5, ge=1)

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        if value != AUTO_PRESET and value not in FBNET_PRESETS:
            hint = nearest(value, [*FBNET_PRESETS, AUTO_PRESET])
            did = f"; did you mean {hint!r}?" if hint else ""
            raise ValueError(f"unknown preset: allowed {', '.join(FBNET_PRESETS)}{did} "
                             f"(or {AUTO_PRESET!r}: chosen from the input size)")
        return value

    def fit_warnings(self, input_shape: tuple[int, ...]) -> list[str]:
        """One line per setting that does not suit images of ``input_shape``
        (C, H, W): an explicit preset other than the one ``auto`` picks."""
        if self.preset == AUTO_PRESET:
            return []
        fitting = auto_preset(input_shape)
        if self.preset == fitting:
            return []
        made_for = FBNET_PRESETS[self.preset].input_size
        shape = "x".join(str(int(v)) for v in input_shape)
        return [f"spaces.layerwise.preset = {self.preset!r} is made for {made_for}x{made_for} inputs, "
                f"the data is {shape}: {fitting!r} fits it (or set 'auto')"]


@SPACES.register(SPACE_NAME)
@dataclass(frozen=True)
class LayerwiseSpace(SearchSpace):
    """A concrete layer-wise space: the macro-architecture for one input
    shape and class count, the candidate op names (table columns) and,
    once measured, the latency table."""

    family = "layerwise"

    name = SPACE_NAME
    Config = LayerwiseConfig

    @classmethod
    def registries(cls) -> dict:
        return {"ops": OPS}

    preset: str
    input_shape: tuple[int, int, int]
    num_classes: int
    stem_channels: int
    layers: tuple[LayerSpec, ...]
    head_channels: int
    op_names: tuple[str, ...] = FBNET_OP_NAMES
    stem_stride: int = 1
    latency_repeats: int = 5
    latency: Optional[LatencyTable] = field(default=None, repr=False)

    @classmethod
    def create(cls, config: LayerwiseConfig, input_shape: tuple[int, int, int], num_classes: int) -> "LayerwiseSpace":
        """The space of ``config.preset`` for images ``input_shape`` (C, H, W);
        ``auto`` is resolved here, so the space holds a concrete preset."""
        preset = resolve_preset(config.preset, input_shape)
        p = FBNET_PRESETS[preset]
        layers, channels = [], p.stem_channels
        for out, count, stride in p.stages:
            for i in range(count):
                layers.append(LayerSpec(channels, out, stride if i == 0 else 1))
                channels = out
        return cls(preset=preset, input_shape=tuple(int(v) for v in input_shape),
                   num_classes=int(num_classes), stem_channels=p.stem_channels, layers=tuple(layers),
                   head_channels=p.head_channels, op_names=FBNET_OP_NAMES, stem_stride=p.stem_stride,
                   latency_repeats=config.latency_repeats)

    # ------------------------------------------------------------ geometry
    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def num_ops(self) -> int:
        return len(self.op_names)

    @property
    def size(self) -> int:
        """Number of architectures: n_ops ** num_layers."""
        return self.num_ops ** self.num_layers

    def stem_hw(self) -> tuple[int, int]:
        _, h, w = self.input_shape
        return _strided(h, self.stem_stride), _strided(w, self.stem_stride)

    def layer_input_hw(self, index: int) -> tuple[int, int]:
        """Spatial size of the input of searchable layer ``index``."""
        h, w = self.stem_hw()
        for spec in self.layers[:index]:
            h, w = _strided(h, spec.stride), _strided(w, spec.stride)
        return h, w

    def layer_output_hw(self, index: int) -> tuple[int, int]:
        h, w = self.layer_input_hw(index)
        stride = self.layers[index].stride
        return _strided(h, stride), _strided(w, stride)

    def final_hw(self) -> tuple[int, int]:
        return self.layer_output_hw(self.num_layers - 1)

    def op_index(self, op_name: str) -> int:
        if op_name not in self.op_names:
            raise ValueError(f"op {op_name!r} is not in space {self.name}/{self.preset} "
                             f"(allowed: {', '.join(self.op_names)})")
        return self.op_names.index(op_name)

    # ------------------------------------------------------------ genotypes
    def genotype_from_dict(self, data: Any) -> LayerwiseGenotype:
        genotype = LayerwiseGenotype.from_dict(data)
        genotype.check(self)
        return genotype

    def random(self, rng: np.random.Generator) -> LayerwiseGenotype:
        return self.decode(rng.integers(0, self.num_ops, self.num_layers))

    def mutate(self, genotype: LayerwiseGenotype, rng: np.random.Generator) -> LayerwiseGenotype:
        """One layer (uniform) gets another op (uniform among the others)."""
        row = self.encode(genotype)
        layer = int(rng.integers(self.num_layers))
        other = int(rng.integers(self.num_ops - 1))
        row[layer] = other + (other >= row[layer])
        return self.decode(row)

    @property
    def encoding_length(self) -> int:
        return self.num_layers

    def encoding_bounds(self) -> np.ndarray:
        return np.full(self.num_layers, self.num_ops, dtype=np.int64)

    def encode(self, genotype: LayerwiseGenotype) -> np.ndarray:
        genotype.check(self)
        return np.asarray(genotype.indices(self.op_names), dtype=np.int64)

    def decode(self, row: np.ndarray) -> LayerwiseGenotype:
        row = np.asarray(row)
        if row.shape != (self.num_layers,) or not np.issubdtype(row.dtype, np.integer):
            raise GenotypeError(f"encoded genotype {row.tolist()!r}: expected {self.num_layers} integer op indices")
        bad = np.flatnonzero((row < 0) | (row >= self.num_ops))
        if bad.size:
            raise GenotypeError(f"encoded genotype layer {int(bad[0])}: op index {int(row[bad[0]])} "
                                f"out of range 0..{self.num_ops - 1}")
        return LayerwiseGenotype(SPACE_NAME, self.preset, tuple(self.op_names[int(i)] for i in row))

    # ------------------------------------------------------------ networks
    def build_network(self, genotype: LayerwiseGenotype) -> nn.Module:
        """Stem -> the chosen block per layer -> head (network.py)."""
        return LayerwiseNet(self, genotype)

    def cost(self, genotype: LayerwiseGenotype) -> dict[str, Optional[float]]:
        """Analytic multiply-adds and parameters (cost.py); latency from the
        measured table (None until :meth:`with_measurements` attaches one)."""
        c = layer_cost.genotype_cost(self, genotype)
        latency = self.latency.genotype_ms(genotype) if self.latency is not None else None
        return {"flops": c.flops, "params": c.params, "latency_ms": latency}

    def render(self, genotype: LayerwiseGenotype, path: str | Path, title: str = "") -> Path:
        genotype.check(self)
        return plots.render_genotype(self, genotype, path, title)

    def with_measurements(self, directory: Path, device: torch.device, measure: bool,
                          progress: Optional[Progress] = None) -> "LayerwiseSpace":
        """The space with the latency table ``directory/latency.json`` when
        it fits this space and ``device``; else, with ``measure``, a new
        measurement (``latency_repeats`` timings, saved there); else the
        table it already had (None)."""
        table = load_or_measure(self, Path(directory), torch.device(device), measure, progress)
        return dataclasses.replace(self, latency=table if table is not None else self.latency)

    def with_latency(self, table: Optional[LatencyTable]) -> "LayerwiseSpace":
        """The space with ``table`` (checked to fit) as its latency table."""
        if table is not None:
            table.check(self)
        return dataclasses.replace(self, latency=table)

    def fingerprint(self) -> dict[str, Any]:
        return {"space": self.name, "config": repr(self),
                "latency": self.latency.digest() if self.latency is not None else None}

    # ------------------------------------------------------------ probability tables
    def uniform_tables(self) -> dict[str, np.ndarray]:
        return uniform_table(self.num_layers, self.num_ops)

    def sample(self, tables: Tables, num_samples: int, seed: int,
               progress: Optional[Progress] = None) -> SampleResult:
        """Each layer's op drawn independently from its row of
        ``tables["layers"]`` (rows renormalised), by inverse-CDF draws, one
        uniform per layer (nas_core.spaces.layer_tables)."""
        return sample_layers(layers_table(tables, self.num_layers, self.num_ops), num_samples, seed, progress)

    def score(self, rows: np.ndarray, tables: Tables, log: bool = False) -> np.ndarray:
        return eq9_scores(rows, layers_table(tables, self.num_layers, self.num_ops), log)

    def plot_tables(self, tables: Tables, title: str = "") -> Any:
        return plots.plot_layer_table(layers_table(tables, self.num_layers, self.num_ops), self.op_names, title)


def _strided(size: int, stride: int) -> int:
    """Output size of a conv with padding k//2: ceil(size / stride)."""
    return (size - 1) // stride + 1
