"""The DSO-NAS space (dso-nas.md §3.1, normal setting), registered as
``"dso"``.

The network (nas_core.spaces.dso.network): a stem, ``stages`` stages of
``blocks_per_stage`` completely connected blocks of ``levels`` levels × the
ops of ``ops`` (paper: M = 4, N = 4: sep conv 3×3 / 5×5, avg / max pool
3×3), a reduction block after every stage but the last. A genotype
(nas_core.spaces.dso.genotype) is the set of kept connections of each block
structure: one shared by every normal block (``scope: share``) or one per
block (``scope: full``).

Encoding: one bit per (structure, connection), structure-major (the
connection order of nas_core.spaces.dso.graph). Architecture tables:
``connections`` (encoding_length, 2), row = (p(pruned), p(kept)) of one
connection; sampling draws every connection independently from its row
and Eq. 9 sums the probabilities of the choices made
(nas_core.spaces.layer_tables, with connections as the "layers"). A
searched λ becomes a table through :meth:`DSOSpace.tables_from_lambda`
(normalised λ: p(kept) = λ / max λ of its structure, so pruned connections
are never drawn and the strongest always is).

``width_multiplier`` scales the channels of the final network
(``build_network``, ``cost``). The paper's last step picks the width after
search to meet a budget: with ``final_budget`` set, every genotype's network
gets the widest width whose ``final_budget_key`` (FLOPs, params or MAC)
meets it (:meth:`DSOSpace.width_for_budget`), so networks compared after
search (DC-NAS's finalists, Table 1's random and complete networks:
:meth:`DSOSpace.random_like`, :meth:`DSOSpace.complete`) share one budget. Defaults: the paper's
CIFAR-10 network (3 stages of 8 blocks, M = N = 4, share scope); the search
width ``init_channels`` is not given by the paper (16 here). ``latency_ms``
comes from the measured table that :meth:`DSOSpace.with_measurements`
attaches (nas_core.spaces.dso.latency), at the search width only (None
without a table or at another width).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping, Optional

import numpy as np
import torch
from pydantic import Field, field_validator

from nas_core.sections import CrossFieldError, Section
from nas_core.spaces.base import SPACES, GenotypeError, Progress, SampleResult, SearchSpace, Tables
from nas_core.spaces.dso import plots
from nas_core.spaces.dso.cost import block_cost, network_cost, op_macs
from nas_core.spaces.dso.genotype import SPACE_NAME, DSOGenotype
from nas_core.spaces.dso.graph import BlockGraph, block_graph
from nas_core.spaces.dso.latency import DSOLatencyTable, load_or_measure
from nas_core.spaces.dso.network import DSONetwork, LayerSpec, layout
from nas_core.spaces.dso.ops import DSO_OPS, DSOCost
from nas_core.spaces.layer_tables import eq9_scores, layers_table, sample_layers

SECTION = "spaces.dso"
TABLE = "connections"
PAPER_OPS = ["sep_conv_3x3", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3"]


class DSOConfig(Section):
    """``spaces.dso`` (defaults: the paper's CIFAR-10 setting)."""

    levels: int = Field(4, ge=1, le=8, description="M, levels per block")
    ops: list[str] = Field(default_factory=lambda: list(PAPER_OPS), description="the N ops of every level")
    stages: int = Field(3, ge=1, description="S stages, a reduction block between two")
    blocks_per_stage: int = Field(8, ge=1, description="B normal blocks per stage")
    init_channels: int = Field(16, ge=1, description="channels of the first stage (search network)")
    scope: Literal["share", "full"] = "share"
    width_multiplier: float = Field(1.0, gt=0, description="final network's channels = init_channels x this")
    final_budget: Optional[float] = Field(None, gt=0, description="null: width_multiplier; else the final "
                                          "network's width is the largest meeting this budget")
    final_budget_key: Literal["flops", "params", "mac"] = "flops"
    latency_repeats: int = Field(5, ge=1, description="timings per part when the latency table is measured")

    @field_validator("ops")
    @classmethod
    def _known_ops(cls, value: list[str]) -> list[str]:
        if not value or len(set(value)) != len(value):
            raise CrossFieldError(f"{SECTION}.ops", value, "a non-empty list of distinct op names")
        for name in value:
            if name not in DSO_OPS:
                raise CrossFieldError(f"{SECTION}.ops", value, f"unknown op {name!r}; allowed "
                                      f"{', '.join(DSO_OPS.names())}")
        return value


@SPACES.register(SPACE_NAME)
@dataclass(frozen=True)
class DSOSpace(SearchSpace):
    """The space for one config and data shape (module docstring)."""

    family = "dso"

    levels: int
    ops: tuple[str, ...]
    stages: int
    blocks_per_stage: int
    init_channels: int
    scope: str
    width_multiplier: float
    input_shape: tuple[int, int, int]
    num_classes: int
    latency_repeats: int = 5
    final_budget: Optional[float] = None
    final_budget_key: str = "flops"
    latency: Optional[DSOLatencyTable] = field(default=None, compare=False, repr=False)

    name: ClassVar[str] = SPACE_NAME
    Config: ClassVar[type[Section]] = DSOConfig

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(self.ops))
        object.__setattr__(self, "input_shape", tuple(int(v) for v in self.input_shape))

    @classmethod
    def create(cls, config: DSOConfig, input_shape: tuple[int, int, int], num_classes: int) -> "DSOSpace":
        return cls(config.levels, tuple(config.ops), config.stages, config.blocks_per_stage, config.init_channels,
                   config.scope, config.width_multiplier, tuple(input_shape), int(num_classes),
                   config.latency_repeats, config.final_budget, config.final_budget_key)

    def with_measurements(self, directory: Path, device: torch.device, measure: bool,
                          progress: Optional[Progress] = None) -> "DSOSpace":
        """The space with its latency table (nas_core.spaces.dso.latency)
        loaded from ``directory`` or, with ``measure``, measured there."""
        table = load_or_measure(self, Path(directory), device, measure, self.latency_repeats, progress)
        return self if table is None else replace(self, latency=table)

    @classmethod
    def registries(cls) -> dict:
        return {"ops (spaces.dso.ops)": DSO_OPS}

    # ------------------------------------------------------------ structure
    @property
    def graph(self) -> BlockGraph:
        return block_graph(self.levels, self.ops)

    @property
    def num_blocks(self) -> int:
        return self.stages * self.blocks_per_stage

    @property
    def num_structures(self) -> int:
        return 1 if self.scope == "share" else self.num_blocks

    def structure_of(self, block: int) -> int:
        """Which λ / kept set normal block ``block`` uses."""
        return 0 if self.scope == "share" else block

    def channels(self, width_multiplier: float = 1.0) -> int:
        return max(1, int(round(self.init_channels * width_multiplier)))

    def layers(self, width_multiplier: float = 1.0) -> tuple[LayerSpec, ...]:
        return layout(self.stages, self.blocks_per_stage, self.channels(width_multiplier), self.input_shape[1:])

    def block_masks(self, kept: np.ndarray) -> np.ndarray:
        """(blocks, E) used-connection masks of every normal block from the
        kept masks (structures, E): isolated nodes removed."""
        graph = self.graph
        used = [graph.used_edges(kept[s]) for s in range(self.num_structures)]
        return np.stack([used[self.structure_of(b)] for b in range(self.num_blocks)])

    def block_costs(self, kept: np.ndarray, width_multiplier: float = 1.0) -> list[DSOCost]:
        """Cost of every normal block under kept masks (structures, E)."""
        used, graph = self.block_masks(kept), self.graph
        return [block_cost(graph, used[s.index], s.channels, s.hw) for s in self.layers(width_multiplier)
                if s.kind == "block"]

    def structure_flops(self, kept: np.ndarray) -> np.ndarray:
        """(structures,) multiply-adds of the normal blocks of each structure
        at the search width (Eq. 17's FLOPs^t; all kept: FLOPs_block)."""
        out = np.zeros(self.num_structures)
        for b, cost in enumerate(self.block_costs(kept)):
            out[self.structure_of(b)] += cost.flops
        return out

    def node_macs(self, kept: np.ndarray) -> np.ndarray:
        """(structures, M·N + 2) memory access cost of every op node and of R
        (the output node) at the search width, summed over the blocks of
        each structure (Eq. 18's MAC^t_(m,n))."""
        used, graph = self.block_masks(kept), self.graph
        out = np.zeros((self.num_structures, graph.num_nodes + 2))
        for spec in self.layers():
            if spec.kind == "block":
                out[self.structure_of(spec.index)] += op_macs(graph, used[spec.index], spec.channels, spec.hw)
        return out

    # ------------------------------------------------------------ genotypes
    def check(self, genotype: DSOGenotype) -> None:
        want = (self.scope, self.levels, self.ops, self.num_structures)
        have = (genotype.scope, genotype.levels, genotype.ops, len(genotype.kept))
        if want != have:
            raise GenotypeError(f"dso genotype (scope, levels, ops, structures) = {have}: this space is {want}")

    def genotype_from_dict(self, data: Any) -> DSOGenotype:
        if isinstance(data, Mapping) and data.get("space") == self.name:  # the space's shape before the labels
            have = (data.get("scope"), data.get("levels"), data.get("ops"))
            if have != (self.scope, self.levels, list(self.ops)):
                raise GenotypeError(f"dso genotype (scope, levels, ops) = {have}: this space is "
                                    f"{(self.scope, self.levels, list(self.ops))}")
        genotype = DSOGenotype.from_dict(data)
        self.check(genotype)
        return genotype

    def genotype_from_masks(self, kept: np.ndarray) -> DSOGenotype:
        kept = np.asarray(kept, dtype=bool).reshape(self.num_structures, self.graph.num_edges)
        return DSOGenotype(self.scope, self.levels, self.ops, tuple(tuple(np.flatnonzero(k)) for k in kept))

    def complete(self) -> DSOGenotype:
        """Every connection kept (the completely connected network)."""
        return self.genotype_from_masks(np.ones(self.encoding_length, dtype=bool))

    def random(self, rng: np.random.Generator) -> DSOGenotype:
        """Every connection kept with probability 1/2, independently."""
        return self.decode(rng.integers(2, size=self.encoding_length))

    def random_like(self, genotype: DSOGenotype, rng: np.random.Generator) -> DSOGenotype:
        """A uniform draw with as many kept connections per structure as
        ``genotype`` (the paper's random baseline of Table 1)."""
        edges = self.graph.num_edges
        return self.genotype_from_masks(np.stack([np.isin(np.arange(edges), rng.choice(edges, len(k), replace=False))
                                                  for k in genotype.kept]))

    def mutate(self, genotype: DSOGenotype, rng: np.random.Generator) -> DSOGenotype:
        """One connection, drawn uniformly, is flipped (kept <-> pruned)."""
        row = self.encode(genotype)
        i = int(rng.integers(len(row)))
        row[i] = 1 - row[i]
        return self.decode(row)

    @property
    def encoding_length(self) -> int:
        return self.num_structures * self.graph.num_edges

    def encoding_bounds(self) -> np.ndarray:
        return np.full(self.encoding_length, 2, dtype=np.int64)

    def encode(self, genotype: DSOGenotype) -> np.ndarray:
        self.check(genotype)
        return genotype.masks().reshape(-1).astype(np.int64)

    def decode(self, row: np.ndarray) -> DSOGenotype:
        row = np.asarray(row)
        if row.shape != (self.encoding_length,) or not np.issubdtype(row.dtype, np.integer) \
                or (row.size and (row.min() < 0 or row.max() > 1)):
            raise GenotypeError(f"dso encoding of shape {row.shape}: expected {self.encoding_length} integers in 0..1")
        return self.genotype_from_masks(row.astype(bool))

    def label(self, genotype: DSOGenotype) -> str:
        """Kept count and the kept bits as hex (one readable line)."""
        bits = np.packbits(self.encode(genotype).astype(np.uint8)).tobytes().hex()
        return f"dso-{genotype.scope}: kept {genotype.num_kept}/{self.encoding_length} [{bits}]"

    # ------------------------------------------------------------ networks
    def final_width(self, genotype: DSOGenotype) -> float:
        """The final network's width multiplier: ``width_multiplier``, or with
        ``final_budget`` the widest whose ``final_budget_key`` meets it."""
        if self.final_budget is None:
            return self.width_multiplier
        return self.width_for_budget(genotype, self.final_budget_key, self.final_budget)

    def build_network(self, genotype: DSOGenotype, width_multiplier: Optional[float] = None) -> DSONetwork:
        """The pruned network: live nodes only, at ``width_multiplier``
        (default: :meth:`final_width`)."""
        self.check(genotype)
        width = self.final_width(genotype) if width_multiplier is None else width_multiplier
        return DSONetwork(self.graph, self.layers(width), self.input_shape[0], self.num_classes,
                          self.block_masks(genotype.masks()))

    def cost(self, genotype: DSOGenotype, width_multiplier: Optional[float] = None) -> dict[str, Optional[float]]:
        """Analytic multiply-adds, memory access cost (elements) and params
        of ``build_network(genotype)`` per image (nas_core.spaces.dso.ops);
        the modelled latency when a table is attached (module docstring)."""
        self.check(genotype)
        width = self.final_width(genotype) if width_multiplier is None else width_multiplier
        c = network_cost(self.graph, self.layers(width), self.input_shape[0], self.num_classes,
                         self.block_masks(genotype.masks()))
        latency = None
        if self.latency is not None and width == 1.0:
            latency = self.latency.network_ms(self, genotype.masks())
        return {"flops": c.flops, "params": c.params, "mac": c.mac, "latency_ms": latency}

    def width_for_budget(self, genotype: DSOGenotype, key: Literal["flops", "params", "mac"],
                         budget: float) -> float:
        """The largest width multiplier (a whole number of first-stage
        channels) whose network's ``key`` is within ``budget`` (the paper's
        step after search); ValueError when even one channel exceeds it."""
        if key not in ("flops", "params", "mac"):
            raise ValueError(f"budget key {key!r}: allowed flops, params, mac")
        fits = lambda c: self.cost(genotype, c / self.init_channels)[key] <= budget  # noqa: E731
        if not fits(1):
            raise ValueError(f"{SECTION}.final_budget = {budget:g}: below the {key} of this network at 1 channel "
                             f"({self.cost(genotype, 1 / self.init_channels)[key]})")
        low, high = 1, 2
        while fits(high):
            low, high = high, 2 * high
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if fits(mid) else (low, mid)
        return low / self.init_channels

    def render(self, genotype: DSOGenotype, path: str | Path, title: str = "") -> Path:
        self.check(genotype)
        return plots.render_blocks(self.graph, genotype.masks(), path, title or self.label(genotype)[:80])

    # ------------------------------------------------------------ probability tables
    def uniform_tables(self) -> dict[str, np.ndarray]:
        return {TABLE: np.full((self.encoding_length, 2), 0.5)}

    def tables_from_lambda(self, lam: np.ndarray) -> dict[str, np.ndarray]:
        """p(kept) = λ / max λ per structure (0 for a structure whose λ are
        all 0); negative λ count as 0."""
        lam = np.clip(np.asarray(lam, dtype=np.float64).reshape(self.num_structures, -1), 0.0, None)
        top = lam.max(axis=1, keepdims=True)
        keep = np.divide(lam, top, out=np.zeros_like(lam), where=top > 0).reshape(-1)
        return {TABLE: np.stack([1.0 - keep, keep], axis=1)}

    def _table(self, tables: Tables) -> np.ndarray:
        if TABLE not in tables:
            raise ValueError(f"architecture tables {sorted(tables)}: the dso space needs {TABLE!r} "
                             "(connections x (pruned, kept))")
        return layers_table({"layers": tables[TABLE]}, self.encoding_length, 2)

    def sample(self, tables: Tables, num_samples: int, seed: int,
               progress: Optional[Progress] = None) -> SampleResult:
        """Every connection kept or pruned independently from its row."""
        return sample_layers(self._table(tables), num_samples, seed, progress)

    def score(self, rows: np.ndarray, tables: Tables, log: bool = False) -> np.ndarray:
        """Eq. 9: Σ over connections of the probability of the choice made."""
        return eq9_scores(rows, self._table(tables), log)

    def plot_tables(self, tables: Tables, title: str = "") -> Any:
        keep = self._table(tables)[:, 1].reshape(self.num_structures, -1)
        return plots.keep_heatmap(keep, title)
