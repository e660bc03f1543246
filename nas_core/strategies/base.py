"""Search strategies: the base class owns the lifecycle, a subclass fills in
the steps (STYLE.md 3-4). A strategy sees loaders and a device, never the
dataset's name or the tracker: logging and checkpointing are callbacks."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional, Protocol, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from nas_core.registry import Registry

STRATEGIES: Registry[type["SearchStrategy"]] = Registry("search strategy")


class NonFiniteLossError(RuntimeError):
    """Training produced NaN/inf; the message names the epoch and step."""

    def __init__(self, epoch: int, step: int, value: float) -> None:
        super().__init__(f"non-finite loss {value} at epoch {epoch + 1}, step {step}: "
                         "stopping; earlier checkpoints are kept")
        self.epoch, self.step, self.value = epoch, step, value


def check_finite(loss: torch.Tensor | float, epoch: int, step: int) -> None:
    value = float(loss)
    if not math.isfinite(value):
        raise NonFiniteLossError(epoch, step, value)


@dataclass
class SearchData:
    """Loaders a strategy trains on: ``train_w`` for weights, ``train_a`` for
    architecture parameters, ``val`` for reporting."""

    train_w: DataLoader
    train_a: DataLoader
    val: Optional[DataLoader] = None


@dataclass
class SearchResult:
    """What every strategy returns. ``probabilities`` maps a table name
    ("layers", or "normal"/"reduce" for cells) to an array of operation
    probabilities (rows: layers or edges, columns: ops)."""

    genotype: Any
    probabilities: dict[str, np.ndarray]
    op_names: list[str]
    history: list[dict[str, float]] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)


class Callback(Protocol):
    def on_epoch_end(self, strategy: "SearchStrategy", epoch: int, metrics: dict[str, float]) -> None: ...


class SearchStrategy(ABC):
    """Lifecycle: ``setup`` -> for each remaining epoch ``train_epoch`` then
    callbacks -> ``derive``. ``state_dict``/``load_state_dict`` make a run
    resumable: ``run(state=...)`` continues after the epoch stored in it."""

    name: ClassVar[str]

    def __init__(self, space: Any, config: Any, device: torch.device, seed: int = 0) -> None:
        self.space, self.config, self.device, self.seed = space, config, device, seed
        self.epoch = 0  # number of finished epochs
        self.history: list[dict[str, float]] = []

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

    @abstractmethod
    def setup(self, data: SearchData) -> None:
        """Build the supernet and optimisers on ``self.device``."""

    @abstractmethod
    def num_epochs(self) -> int: ...

    @abstractmethod
    def train_epoch(self, epoch: int, data: SearchData) -> dict[str, float]:
        """One epoch; returns scalar metrics. Call ``check_finite`` per step."""

    @abstractmethod
    def derive(self) -> SearchResult:
        """The final genotype and operation-probability tables."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume bit-identically (weights, arch
        params, optimisers, RNG states, ``epoch``, ``history``)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...
