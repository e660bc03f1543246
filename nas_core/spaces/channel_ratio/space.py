"""Channel-ratio search space (dc-nas.md §4.1, Figure 2, Tables 1-2).

A baseline of six 3×3 conv layers (conv -> BatchNorm -> ReLU) and one
fully-connected classifier after global average pooling. Layer l has
``round(base_widths[l] * ratio_l)`` output channels (at least 1), with
ratio_l ∈ ``ratios`` (paper: 1/4, 1/2, 1, 2, 4), so the space holds
``len(ratios) ** 6`` architectures (5^6 = 15,625). The genotype is the tuple of
six ratios; its encoding is the index of each layer's ratio in ``ratios``.

Choices where the paper is vague (it only says "six convolutional layers and
a fully-connected layer"): BatchNorm after every conv, padding 1, per-layer
strides from params (8×8 digits: 1,1,2,1,2,1 -> 8,8,4,4,2,2), global average
pooling before the classifier; the cost convention is in ``network.py``.
The space has no measured latency table (``latency_ms`` is None).
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping, Optional

import numpy as np
import torch
from pydantic import Field, field_validator

from nas_core.sections import CrossFieldError, Section
from nas_core.spaces.base import SPACES, GenotypeError, Progress, SampleResult, SearchSpace, Tables
from nas_core.spaces.channel_ratio import plots
from nas_core.spaces.channel_ratio.network import ChannelRatioNet, analytic_cost, init_weights
from nas_core.spaces.layer_tables import eq9_scores, layers_table, sample_layers, uniform_table

NUM_LAYERS = 6
SECTION = "spaces.channel_ratio"


class ChannelRatioConfig(Section):
    """``spaces.channel_ratio``: the width of each of the six conv layers at
    ratio 1, the ratios a layer may take (paper: 1/4, 1/2, 1, 2, 4) and the
    per-layer strides (8×8 digits: 1,1,2,1,2,1)."""

    base_widths: list[int] = Field(default_factory=lambda: [8, 8, 16, 16, 32, 32])
    ratios: list[float] = Field(default_factory=lambda: [0.25, 0.5, 1.0, 2.0, 4.0])
    strides: list[int] = Field(default_factory=lambda: [1, 1, 2, 1, 2, 1])

    @field_validator("base_widths")
    @classmethod
    def _widths(cls, value: list[int]) -> list[int]:
        if len(value) != NUM_LAYERS or any(w < 1 for w in value):
            raise CrossFieldError(f"{SECTION}.base_widths", value, f"{NUM_LAYERS} widths, each >= 1")
        return value

    @field_validator("ratios")
    @classmethod
    def _ratios(cls, value: list[float]) -> list[float]:
        if len(value) < 2 or len(set(value)) != len(value) or any(r <= 0 for r in value):
            raise CrossFieldError(f"{SECTION}.ratios", value, "at least 2 distinct positive channel ratios")
        return value

    @field_validator("strides")
    @classmethod
    def _strides(cls, value: list[int]) -> list[int]:
        if len(value) != NUM_LAYERS or any(s not in (1, 2) for s in value):
            raise CrossFieldError(f"{SECTION}.strides", value, f"{NUM_LAYERS} strides, each 1 or 2")
        return value


@dataclass(frozen=True)
class ChannelRatioGenotype:
    """One architecture: the channel ratio of each of the six conv layers."""

    ratios: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.ratios) != NUM_LAYERS:
            raise GenotypeError(f"channel-ratio genotype needs {NUM_LAYERS} ratios, got {len(self.ratios)}: "
                                f"{self.ratios}")
        object.__setattr__(self, "ratios", tuple(float(r) for r in self.ratios))

    def to_dict(self) -> dict[str, Any]:
        return {"space": ChannelRatioSpace.name, "ratios": list(self.ratios)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def __str__(self) -> str:
        return ", ".join(f"{r:g}" for r in self.ratios)


@dataclass(frozen=True)
class ChannelRatioSpace(SearchSpace):
    """The space for one config and data shape: the SearchSpace protocol,
    plus enumeration (``size``, ``enumerate``, ``genotype_at``, ``index_of``),
    the ablation's draw of distinct architectures (``sample_distinct``) and
    ``widths``."""

    family = "channel_ratio"

    base_widths: tuple[int, ...]
    ratios: tuple[float, ...]
    strides: tuple[int, ...]
    input_shape: tuple[int, int, int]
    num_classes: int

    name: ClassVar[str] = "channel_ratio"
    Config: ClassVar[type[Section]] = ChannelRatioConfig
    num_layers: ClassVar[int] = NUM_LAYERS

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_widths", tuple(int(w) for w in self.base_widths))
        object.__setattr__(self, "ratios", tuple(float(r) for r in self.ratios))
        object.__setattr__(self, "strides", tuple(int(s) for s in self.strides))
        object.__setattr__(self, "input_shape", tuple(int(v) for v in self.input_shape))
        if len(self.base_widths) != NUM_LAYERS or len(self.strides) != NUM_LAYERS:
            raise ValueError(f"channel-ratio space needs {NUM_LAYERS} base widths and strides, got "
                             f"{self.base_widths} and {self.strides}")
        if len(self.ratios) < 2 or len(set(self.ratios)) != len(self.ratios) or min(self.ratios) <= 0:
            raise ValueError(f"channel ratios must be at least 2, distinct and positive, got {self.ratios}")
        if len(self.input_shape) != 3 or self.num_classes < 2:
            raise ValueError(f"input_shape {self.input_shape} must be (C, H, W) and num_classes "
                             f"{self.num_classes} >= 2")

    @classmethod
    def create(cls, config: ChannelRatioConfig, input_shape: tuple[int, int, int],
               num_classes: int) -> "ChannelRatioSpace":
        return cls(tuple(config.base_widths), tuple(config.ratios), tuple(config.strides),
                   tuple(input_shape), int(num_classes))

    # ------------------------------------------------------------ genotypes
    def genotype_from_dict(self, data: Any) -> ChannelRatioGenotype:
        if not isinstance(data, Mapping):
            raise GenotypeError(f"a channel_ratio genotype is a mapping, got {type(data).__name__}")
        if data.get("space") != self.name:
            raise GenotypeError(f"genotype of space {data.get('space')!r}: expected {self.name!r}")
        extra = sorted(set(data) - {"space", "ratios"})
        if extra:
            raise GenotypeError(f"channel_ratio genotype: unknown keys {extra} (allowed: space, ratios)")
        ratios = data.get("ratios")
        if not isinstance(ratios, (list, tuple)) or len(ratios) != NUM_LAYERS:
            raise GenotypeError(f"channel_ratio genotype: 'ratios' must be a list of {NUM_LAYERS} numbers, "
                                f"got {ratios!r}")
        for layer, ratio in enumerate(ratios):
            self._ratio_index(layer, ratio)
        return ChannelRatioGenotype(tuple(ratios))

    def _ratio_index(self, layer: int, ratio: Any) -> int:
        """Index of ``ratio`` in the space, or a GenotypeError naming the
        layer, the value, the allowed ratios and the nearest one."""
        number = isinstance(ratio, (int, float, np.integer, np.floating)) and not isinstance(ratio, bool)
        value = float(ratio) if number else None
        if value not in self.ratios:
            allowed = ", ".join(f"{r:g}" for r in self.ratios)
            hint = ""
            if value is not None and np.isfinite(value):
                hint = f"; did you mean {min(self.ratios, key=lambda r: abs(r - value)):g}?"
            raise GenotypeError(f"layer {layer}: ratio {ratio!r} is not in the space (allowed: {allowed}){hint}")
        return self.ratios.index(value)

    def random(self, rng: np.random.Generator) -> ChannelRatioGenotype:
        return self.decode(rng.integers(len(self.ratios), size=NUM_LAYERS))

    def mutate(self, genotype: ChannelRatioGenotype, rng: np.random.Generator) -> ChannelRatioGenotype:
        """One layer, drawn uniformly, gets another of the ratios."""
        row = self.encode(genotype)
        layer = int(rng.integers(NUM_LAYERS))
        others = [i for i in range(len(self.ratios)) if i != row[layer]]
        row[layer] = others[int(rng.integers(len(others)))]
        return self.decode(row)

    @property
    def encoding_length(self) -> int:
        return NUM_LAYERS

    def encoding_bounds(self) -> np.ndarray:
        return np.full(NUM_LAYERS, len(self.ratios), dtype=np.int64)

    def encode(self, genotype: ChannelRatioGenotype) -> np.ndarray:
        return np.array([self._ratio_index(layer, r) for layer, r in enumerate(genotype.ratios)], dtype=np.int64)

    def decode(self, row: np.ndarray) -> ChannelRatioGenotype:
        row = np.asarray(row)
        if row.shape != (NUM_LAYERS,) or not np.issubdtype(row.dtype, np.integer) \
                or row.min() < 0 or row.max() >= len(self.ratios):
            raise GenotypeError(f"channel_ratio encoding {row.tolist()}: expected {NUM_LAYERS} integers in "
                                f"0..{len(self.ratios) - 1}")
        return ChannelRatioGenotype(tuple(self.ratios[int(i)] for i in row))

    # ------------------------------------------------------------ enumeration
    def size(self) -> int:
        return len(self.ratios) ** NUM_LAYERS

    def enumerate(self) -> Iterator[ChannelRatioGenotype]:
        """Every genotype, in the mixed-radix order of ``genotype_at``."""
        for combo in itertools.product(self.ratios, repeat=NUM_LAYERS):
            yield ChannelRatioGenotype(combo)

    def genotype_at(self, index: int) -> ChannelRatioGenotype:
        if not 0 <= index < self.size():
            raise IndexError(f"architecture index {index} outside 0..{self.size() - 1}")
        return self.decode(np.array(np.unravel_index(index, (len(self.ratios),) * NUM_LAYERS), dtype=np.int64))

    def index_of(self, genotype: ChannelRatioGenotype) -> int:
        return int(np.ravel_multi_index(self.encode(genotype), (len(self.ratios),) * NUM_LAYERS))

    def sample_distinct(self, n: int, seed: int) -> list[int]:
        """``n`` distinct architecture indices, uniformly without replacement
        (Algorithm 1 line 2 for separately trained networks), sorted so that
        the order does not depend on the draw."""
        if not 1 <= n <= self.size():
            raise ValueError(f"cannot sample {n} distinct architectures from a space of {self.size()}")
        rng = np.random.default_rng(seed)
        return sorted(int(i) for i in rng.choice(self.size(), size=n, replace=False))

    # ------------------------------------------------------------ networks
    def widths(self, genotype: ChannelRatioGenotype) -> list[int]:
        return [max(1, round(b * r)) for b, r in zip(self.base_widths, genotype.ratios)]

    def build_network(self, genotype: ChannelRatioGenotype,
                      generator: Optional[torch.Generator] = None) -> ChannelRatioNet:
        """The network sized to the space's input shape and classes; with
        ``generator`` every weight is drawn from it (``init_weights``), so
        networks built in parallel threads are reproducible without the
        global RNG; without, PyTorch's default init from the global RNG."""
        model = ChannelRatioNet(self.widths(genotype), self.strides, self.input_shape[0], self.num_classes)
        if generator is not None:
            init_weights(model, generator)
        return model

    def cost(self, genotype: ChannelRatioGenotype) -> dict[str, Optional[float]]:
        """Analytic params and FLOPs (multiply-accumulates) per image."""
        cost = analytic_cost(self.widths(genotype), self.strides, self.input_shape, self.num_classes)
        return {**cost, "latency_ms": None}

    def render(self, genotype: ChannelRatioGenotype, path: str | Path, title: str = "") -> Path:
        return plots.render_widths(self.widths(genotype), self.base_widths, genotype.ratios, path, title)

    # ------------------------------------------------------------ probability tables
    def uniform_tables(self) -> dict[str, np.ndarray]:
        return uniform_table(NUM_LAYERS, len(self.ratios))

    def sample(self, tables: Tables, num_samples: int, seed: int,
               progress: Optional[Progress] = None) -> SampleResult:
        """Each layer's ratio drawn independently from its renormalised row
        of ``tables["layers"]``; unique rows and counts."""
        return sample_layers(layers_table(tables, NUM_LAYERS, len(self.ratios)), num_samples, seed, progress)

    def score(self, rows: np.ndarray, tables: Tables, log: bool = False) -> np.ndarray:
        """Eq. 9: Σ_l a(N^l) from ``tables["layers"]`` (``log``: Σ_l log)."""
        return eq9_scores(rows, layers_table(tables, NUM_LAYERS, len(self.ratios)), log)

    def plot_tables(self, tables: Tables, title: str = "") -> Any:
        return plots.table_heatmap(layers_table(tables, NUM_LAYERS, len(self.ratios)), self.ratios, title)


SPACES.register(ChannelRatioSpace.name)(ChannelRatioSpace)
