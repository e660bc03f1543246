"""Search strategies: the base class owns the lifecycle, a subclass fills in
the steps (STYLE.md 3-4). A strategy sees loaders, a space and a device,
never the dataset's name or the tracker: logging and checkpointing are
callbacks.

Every strategy class declares

* ``name`` (its key in :data:`STRATEGIES` and its params section
  ``strategies.<name>``), ``Config`` (the pydantic model of that section,
  defaults = its paper's published settings where they fit a CPU run) and
  ``spaces`` (the search spaces it can search: :class:`SpacesOf` the
  space family it is written for);
* ``kind``: ``"one_shot"`` (:class:`OneShotStrategy`: trains a supernet, a
  checkpoint per epoch, in the pretrain stage; derives in the search stage)
  or ``"multi_trial"`` (nas_core.strategies.multi_trial: trials through an
  evaluator in the search stage).

:func:`create_strategy` is the only way a strategy is built.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Hashable, Mapping, Optional, Protocol, Sequence

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.utils.data import DataLoader, Dataset

from nas_core.registry import Registry
from nas_core.sections import Section, validated_section
from nas_core.train.distributed import is_distributed
from nas_core.train.loop import make_loader

STRATEGIES: Registry[type["SearchStrategy"]] = Registry("search strategy")


class StrategyError(ValueError):
    """A strategy asked for with a space or settings it cannot use."""


@dataclass
class SearchData:
    """Loaders a strategy trains on: ``train_w`` for weights, ``train_a`` for
    architecture parameters, ``val`` for reporting."""

    train_w: DataLoader
    train_a: DataLoader
    val: Optional[DataLoader] = None


@dataclass
class SearchResult:
    """What every strategy returns. ``tables`` are its architecture-
    probability tables in the format of its space's ``sample``/``score``
    (layer-wise: ``layers`` (L, n_ops); cell: ``normal``/``reduce`` (14,
    n_ops) and ``edges_normal``/``edges_reduce`` (14,))."""

    genotype: Any
    tables: dict[str, np.ndarray]
    history: list[dict[str, float]] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)


class Callback(Protocol):
    def on_epoch_end(self, strategy: "SearchStrategy", epoch: int, metrics: dict[str, float]) -> None: ...


class OneShotConfig(Section):
    """Keys every one-shot strategy has: epochs of supernet training, the
    share of D~ that trains the weights (``train_w``; the rest, ``train_a``,
    trains the architecture parameters: DARTS's halves, FBNet's 80/20) and
    the batch sizes of the two steps (``arch_batch_size`` None:
    ``batch_size``)."""

    epochs: int = Field(4, ge=1)
    weight_fraction: float = Field(0.5, gt=0.0, lt=1.0)
    batch_size: int = Field(64, ge=1)
    arch_batch_size: Optional[int] = Field(None, ge=1)


class SpacesOf:
    """``spaces`` of a strategy: every registered space of ``families``
    (:attr:`nas_core.spaces.base.SearchSpace.family`), or every registered
    space when none is given; evaluated on access, so spaces registered
    later count. A strategy asks for the family it is written for, never
    for a space by name."""

    def __init__(self, *families: str) -> None:
        self.families = families

    def __get__(self, obj: Any, owner: Any) -> tuple[str, ...]:
        from nas_core.spaces import SPACES

        return tuple(n for n in SPACES.names() if not self.families or SPACES.get(n).family in self.families)


class SearchStrategy(ABC):
    """What every strategy shares: its space, validated config, device and
    seed; a kind; how its result is drawn. The lifecycle is the kind's:
    :class:`OneShotStrategy` (supernet epochs) or
    nas_core.strategies.multi_trial.MultiTrialStrategy (trials)."""

    name: ClassVar[str]
    kind: ClassVar[str]
    spaces: ClassVar[tuple[str, ...]]
    Config: ClassVar[type[Section]]

    def __init__(self, space: Any, config: Any, device: torch.device, seed: int = 0) -> None:
        self.space, self.config, self.device, self.seed = space, config, torch.device(device), seed
        self.history: list[dict[str, float]] = []

    @classmethod
    def data_parallel(cls) -> type["SearchStrategy"]:
        """The class to use under torchrun (override where a strategy has a
        data-parallel variant)."""
        raise StrategyError(f"strategy {cls.name!r} has no data-parallel variant (torchrun)")

    @classmethod
    def delegates(cls) -> tuple[str, ...]:
        """Other registered strategies whose code may run under this one,
        found by name at run time (so no import shows it): the code deps of
        the stages that run this strategy include theirs. None by default."""
        return ()

    @abstractmethod
    def supernet_name(self) -> Optional[str]:
        """The one-shot strategy whose supernet the pretrain stage trains for
        this search (itself for a one-shot strategy), or None for none."""

    def progress_postfix(self, metrics: dict[str, float]) -> dict[str, str]:
        """What the stage's progress bar shows after an epoch or a trial."""
        return {k: f"{metrics[k]:.3f}" for k in ("loss", "acc") if k in metrics}

    def arrays(self) -> dict[str, np.ndarray]:
        """Arrays the stages save as ``<name>.npy`` after every epoch and with
        the result (e.g. FBNet's theta per epoch); none by default."""
        return {}

    def figures(self, result: SearchResult) -> dict[str, Any]:
        """Matplotlib figures of a result, by file name; the stage saves and
        logs them (default: the space's plot of the architecture tables)."""
        fig = self.space.plot_tables(result.tables, title=self.name)
        return {} if fig is None else {"tables.png": fig}


class OneShotStrategy(SearchStrategy):
    """A strategy that trains a weight-sharing supernet (``self.supernet``,
    implementing nas_core.supernet.base.Supernet) whose weights are in
    ``state_dict()["supernet"]``: the per-epoch checkpoints DC-NAS reads.

    Lifecycle: ``setup`` -> for each remaining epoch ``train_epoch`` then
    callbacks -> ``derive``. ``state_dict``/``load_state_dict`` make a run
    resumable: ``run(state=...)`` continues after the epoch stored in it."""

    kind = "one_shot"
    supernet: torch.nn.Module

    def __init__(self, space: Any, config: Any, device: torch.device, seed: int = 0) -> None:
        super().__init__(space, config, device, seed)
        self.epoch = 0  # number of finished epochs

    def supernet_name(self) -> Optional[str]:
        return self.name

    def run(self, data: SearchData, callbacks: Sequence[Callback] = (),
            state: dict[str, Any] | None = None) -> SearchResult:
        self.setup(data)
        if state is not None:
            self.load_state_dict(state)
        while self.epoch < self.num_epochs():
            metrics = self.train_epoch(self.epoch, data)
            self.history.append(metrics)
            self.epoch += 1
            for callback in callbacks:
                callback.on_epoch_end(self, self.epoch, metrics)
        return self.derive()

    def search_data(self, train_w: Dataset, train_a: Dataset, val: Dataset, num_workers: int = 0) -> SearchData:
        """Loaders over the subset's splits with this strategy's batch sizes;
        shuffling uses each loader's own generator (seeded from ``seed``)."""
        c = self.config
        return SearchData(make_loader(train_w, c.batch_size, True, self.seed, num_workers),
                          make_loader(train_a, c.arch_batch_size or c.batch_size, True, self.seed + 1, num_workers),
                          make_loader(val, c.batch_size, False, self.seed, num_workers))

    @abstractmethod
    def setup(self, data: Optional[SearchData]) -> None:
        """Build networks and optimisers on ``self.device`` (``data`` may be
        None when only rebuilding from a checkpoint)."""

    @abstractmethod
    def num_epochs(self) -> int: ...

    @abstractmethod
    def train_epoch(self, epoch: int, data: SearchData) -> dict[str, float]:
        """One epoch; returns scalar metrics. Call ``check_finite`` per step."""

    @abstractmethod
    def derive(self) -> SearchResult:
        """The final genotype and architecture tables."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume bit-identically (weights, arch
        params, optimisers, RNG states, ``epoch``, ``history``)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    @abstractmethod
    def tables(self) -> dict[str, np.ndarray]:
        """The current architecture-probability tables (see SearchResult)."""

    def supernet_key(self, state: Mapping[str, Any]) -> Hashable:
        """Checkpoints with equal keys hold supernets of the same shape (Eq. 7
        compares one supernet across epochs; P-DARTS rebuilds it per stage)."""
        return 0

    def load_supernet(self, state: Mapping[str, Any]) -> torch.nn.Module:
        """``self.supernet`` with the weights of checkpoint ``state``."""
        self.supernet.load_state_dict(state["supernet"])
        return self.supernet


def strategy_config(name: str, params: Any = None) -> Section:
    """The validated config of strategy ``name`` from a model instance, a
    mapping of its section or None (the published defaults)."""
    return validated_section(STRATEGIES.get(name).Config, params, f"strategies.{name}", StrategyError)


def check_space(name: str, space: Any) -> None:
    supported = STRATEGIES.get(name).spaces
    if space.name not in supported:
        raise StrategyError(f"search.space = {space.name!r}: strategy {name!r} searches "
                            f"{', '.join(supported)}")


def create_strategy(name: str, space: Any, params: Any = None, device: torch.device | str = "cpu",
                    seed: int = 0) -> SearchStrategy:
    """Build registered strategy ``name`` on ``space`` with ``params`` (its
    Config, a mapping of its ``strategies.<name>`` section, or None). Under
    torchrun the strategy's data-parallel variant is built."""
    cls = STRATEGIES.get(name)
    check_space(name, space)
    config = strategy_config(name, params)
    if is_distributed():
        cls = cls.data_parallel()
    return cls(space, config, torch.device(device), seed)


@dataclass(frozen=True)
class SupernetSpec:
    """A trained one-shot strategy as any process rebuilds it: the
    strategy's name, its params section ``config``, ``seed`` and a pretrain
    ``checkpoint`` file. The one way a trained supernet is restored (the
    search and dcnas_features stages, the ``supernet`` evaluator's workers);
    picklable, so fan-out items carry it."""

    strategy: str
    config: dict[str, Any]
    checkpoint: str
    seed: int = 0

    def restore(self, space: Any, device: Any) -> "OneShotStrategy":
        """The strategy with the checkpoint's whole state (weights,
        architecture parameters, optimisers, RNG states)."""
        from nas_core.train.checkpoint import load_checkpoint

        strategy = self._built(space, device)
        strategy.load_state_dict(load_checkpoint(self.checkpoint))
        return strategy

    def load(self, space: Any, device: Any) -> nn.Module:
        """Only the supernet with the checkpoint's weights (the process's
        RNG and no optimiser touched), on ``device``."""
        from nas_core.train.checkpoint import load_checkpoint

        return self._built(space, device).load_supernet(load_checkpoint(self.checkpoint)).to(device)

    def _built(self, space: Any, device: Any) -> "OneShotStrategy":
        strategy = create_strategy(self.strategy, space, self.config, device, self.seed)
        if not isinstance(strategy, OneShotStrategy):
            raise StrategyError(f"strategy {self.strategy!r} trains no supernet")
        strategy.setup(None)
        return strategy
