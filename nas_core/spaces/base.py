"""The SearchSpace protocol (docs/ARCHITECTURE.md, "The protocols").

A space is a frozen value built from its own params section
(``spaces.<name>``, a :class:`~nas_core.sections.Section` model named
``Config`` on the space class) and the data's shape. It owns everything a
strategy, DC-NAS or a stage needs to know about architectures:

* genotypes: a typed, frozen value with ``to_dict()`` (carrying the space
  name) and a readable ``str``; :meth:`SearchSpace.genotype_from_dict`
  validates one on load;
* ``random`` / ``mutate`` (one op or one input changes, as regularised
  evolution mutates) / ``encode`` / ``decode``: a fixed-length integer
  vector per genotype (``encoding_length`` entries, entry j in
  ``0..encoding_bounds()[j] - 1``), the row format of DC-NAS's
  ``archs.npy`` and the tokens of controllers and predictors;
* ``build_network``: the final (stand-alone) network of a genotype;
* ``cost``: FLOPs (multiply-adds per image), parameters and latency (from a
  measured table where the space has one, else None);
* ``render``: a picture of a genotype;
* architecture-probability tables (what a one-shot strategy learns):
  ``sample`` draws encoded genotypes from them (DC-NAS Algorithm 1, line 2)
  and ``score`` is DC-NAS Eq. 9 on them.

Spaces never import strategies, supernets or DC-NAS code.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Mapping, Optional

import numpy as np
import torch
from torch import nn

from nas_core.registry import Registry
from nas_core.sections import Section

Tables = Mapping[str, np.ndarray]
Progress = Callable[..., Iterable]


class GenotypeError(ValueError):
    """A genotype that is malformed or does not fit its space."""


@dataclass(frozen=True)
class SampleResult:
    """Unique encoded architectures (``archs`` (u, encoding_length), sorted
    lexicographically) and how often each was drawn (``counts`` (u,))."""

    archs: np.ndarray
    counts: np.ndarray

    @property
    def num_drawn(self) -> int:
        return int(self.counts.sum())

    @property
    def num_unique(self) -> int:
        return int(self.archs.shape[0])


def unique_rows(rows: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Lexicographically sorted unique rows and their summed weights (counts
    when ``weights`` is None)."""
    rows = np.ascontiguousarray(rows)
    if rows.shape[0] == 0:
        return rows, np.zeros(0, dtype=np.int64)
    order = np.lexsort(rows.T[::-1])
    rows = rows[order]
    w = np.ones(rows.shape[0], dtype=np.int64) if weights is None else np.asarray(weights)[order]
    starts = np.flatnonzero(np.r_[True, (rows[1:] != rows[:-1]).any(1)])
    return rows[starts], np.add.reduceat(w, starts).astype(np.int64)


def index_dtype(largest: int) -> np.dtype:
    """Smallest signed integer type that holds values 0..largest."""
    return np.dtype(np.int8) if largest <= np.iinfo(np.int8).max else np.dtype(np.int16)


def sample_in_chunks(draw: Callable[[np.random.Generator, int], np.ndarray], num_samples: int, seed: int,
                     chunk_size: int = 200_000, progress: Optional[Progress] = None) -> SampleResult:
    """``num_samples`` rows from ``draw(rng, n)`` (one ``numpy`` Generator
    seeded by ``seed``), deduplicated chunk by chunk, so memory is bounded by
    the unique rows plus one chunk."""
    if num_samples < 1:
        raise ValueError(f"num_samples = {num_samples}: must be >= 1")
    rng = np.random.default_rng(seed)
    sizes = [min(chunk_size, num_samples - start) for start in range(0, num_samples, chunk_size)]
    if progress is not None:
        sizes = progress(sizes, desc="sample", total=len(sizes))
    archs: np.ndarray | None = None
    counts = np.zeros(0, dtype=np.int64)
    for n in sizes:
        chunk, chunk_counts = unique_rows(draw(rng, n))
        if archs is None:
            archs, counts = chunk, chunk_counts
        else:
            archs, counts = unique_rows(np.concatenate([archs, chunk]), np.concatenate([counts, chunk_counts]))
    return SampleResult(archs=archs, counts=counts)


def constrains_tokens(space: "SearchSpace") -> bool:
    """Whether ``space`` narrows :meth:`SearchSpace.allowed_tokens` (a
    generator may skip masking where it does not)."""
    return type(space).allowed_tokens is not SearchSpace.allowed_tokens


def count_parameters(module: nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


class SearchSpace(ABC):
    """One concrete search space (see the module docstring). Subclasses are
    frozen dataclasses registered in :data:`nas_core.spaces.SPACES` under
    ``name``; ``Config`` is the model of their ``spaces.<name>`` section and
    :meth:`create` builds the space from it and the data's shape."""

    name: ClassVar[str]
    Config: ClassVar[type[Section]]
    #: The family whose genotype format and supernet the space shares: a
    #: strategy written for a family (the DARTS family for ``"cell"``) runs
    #: on every registered space of it, so a new cell-like space declares
    #: ``family = "cell"`` instead of being added to each strategy.
    family: ClassVar[str]

    @classmethod
    @abstractmethod
    def create(cls, config: Section, input_shape: tuple[int, int, int], num_classes: int) -> "SearchSpace":
        """The space for one config and data shape (C, H, W)."""

    @classmethod
    def registries(cls) -> dict[str, Registry]:
        """Named choices of this space family that params can refer to (op
        tables, op sets), by title, for ``nasflow list``."""
        return {}

    # ------------------------------------------------------------ genotypes
    @abstractmethod
    def genotype_from_dict(self, data: Any) -> Any:
        """A genotype from ``to_dict()`` output, validated against this space
        (:class:`GenotypeError` naming what is wrong)."""

    @abstractmethod
    def random(self, rng: np.random.Generator) -> Any:
        """A genotype drawn uniformly (each decision independently)."""

    @abstractmethod
    def mutate(self, genotype: Any, rng: np.random.Generator) -> Any:
        """A different genotype that changes one decision (an op or an input)."""

    @property
    @abstractmethod
    def encoding_length(self) -> int: ...

    @abstractmethod
    def encoding_bounds(self) -> np.ndarray:
        """(encoding_length,) number of values entry j can take."""

    @abstractmethod
    def encode(self, genotype: Any) -> np.ndarray:
        """(encoding_length,) int64; equal genotypes give equal rows."""

    @abstractmethod
    def decode(self, row: np.ndarray) -> Any: ...

    def allowed_tokens(self, position: int, prefixes: np.ndarray) -> np.ndarray:
        """(n, ``encoding_bounds()[position]``) bool: the values entry
        ``position`` may take after each of n rows' first ``position``
        entries (``prefixes``, (n, position)). Every in-bounds value by
        default; a space whose rows are constrained (the cell spaces'
        canonical order) narrows it, so a token-by-token generator (``rl``,
        ``nao``) emits only rows :meth:`decode` accepts."""
        return np.ones((len(prefixes), int(self.encoding_bounds()[position])), dtype=bool)

    def label(self, genotype: Any) -> str:
        """One readable line (CSV rows, MLflow params)."""
        return str(genotype)

    # ------------------------------------------------------------ networks
    @abstractmethod
    def build_network(self, genotype: Any) -> nn.Module:
        """The stand-alone network of ``genotype`` (final-network settings
        come from the space's config); build it under a seeded RNG."""

    @abstractmethod
    def cost(self, genotype: Any) -> dict[str, Optional[float]]:
        """``flops`` (multiply-adds per image), ``params`` and ``latency_ms``
        (from a measured table, None where the space has none)."""

    def training_recipe(self) -> dict[str, Any]:
        """How the space's final networks are trained beyond plain SGD: keys
        of nas_core.train.fit.FitSettings (``drop_path``, ``aux_weight``,
        ``cutout``, ``grad_clip``); none by default."""
        return {}

    @abstractmethod
    def render(self, genotype: Any, path: str | Path, title: str = "") -> Path:
        """Draw ``genotype`` to a PNG at ``path`` (written atomically)."""

    def with_measurements(self, directory: Path, device: torch.device, measure: bool,
                          progress: Optional[Progress] = None) -> "SearchSpace":
        """The space with its device-measured tables (FBNet's latency table)
        loaded from ``directory``, or, with ``measure``, measured and saved
        there when missing or stale. Spaces without such tables return
        themselves."""
        return self

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this space for resume guards (JSON-able)."""
        return {"space": self.name, "config": repr(self)}

    # ------------------------------------------------------------ probability tables
    @abstractmethod
    def uniform_tables(self) -> dict[str, np.ndarray]:
        """Architecture-probability tables giving every choice equal weight."""

    @abstractmethod
    def sample(self, tables: Tables, num_samples: int, seed: int,
               progress: Optional[Progress] = None) -> SampleResult:
        """Draw ``num_samples`` encoded genotypes from ``tables``."""

    @abstractmethod
    def score(self, rows: np.ndarray, tables: Tables, log: bool = False) -> np.ndarray:
        """DC-NAS Eq. 9 per encoded row: the sum over decisions of the
        probability of the choice made (``log``: the sum of logs)."""

    def plot_tables(self, tables: Tables, title: str = "") -> Any:
        """A matplotlib figure of ``tables`` (None: nothing to draw)."""
        return None


#: Search-space classes by name (``search.space``, ``nasflow list``).
SPACES: Registry[type[SearchSpace]] = Registry("search space")


def make_space(name: str, config: Any, input_shape: tuple[int, ...], num_classes: int) -> SearchSpace:
    """The registered space ``name`` built from its config (a ``Config``
    instance, a mapping of its ``spaces.<name>`` section, or None for the
    defaults) and the data's shape."""
    cls = SPACES.get(name)
    if not isinstance(config, cls.Config):
        config = cls.Config.model_validate(dict(config or {}))
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape = {input_shape!r}: expected (channels, height, width), all >= 1")
    if num_classes < 2:
        raise ValueError(f"num_classes = {num_classes}: need at least 2")
    return cls.create(config, shape, int(num_classes))
