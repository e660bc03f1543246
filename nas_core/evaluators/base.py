"""Evaluators: genotype -> metrics, the third part of NNI's model /
strategy / evaluator split. A multi-trial strategy proposes genotypes, an
evaluator scores them, the trial runner (nas_core.strategies.multi_trial)
connects the two; DC-NAS's per-cluster evaluation can use any of them too.

Every evaluator class declares ``name`` (its key in :data:`EVALUATORS` and
its params section ``evaluators.<name>``), ``Config`` (the pydantic model of
that section) and ``needs_supernet`` (True when it scores a genotype with a
trained one-shot supernet's weights). :meth:`Evaluator.evaluate` returns a
dict of floats that always holds ``score``: the number a strategy ranks by,
larger is better (a proxy whose raw value is better when smaller is
negated, and says so).

An evaluator sees datasets and a device, never files, the tracker or the
task runner: the trial runner builds it inside the worker that runs the
trial (a thread, a Dask or Ray worker), so it must be cheap to build and its
``evaluate`` must be deterministic for a given ``seed``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Annotated, Any, Callable, ClassVar, Optional

import torch
from pydantic import AfterValidator
from torch import nn
from torch.utils.data import Dataset

from nas_core.registry import Registry
from nas_core.sections import Section, validated_section

EVALUATORS: Registry[type["Evaluator"]] = Registry("evaluator")


class EvaluatorError(ValueError):
    """An evaluator asked for with settings or inputs it cannot use."""


@dataclass(frozen=True)
class EvalData:
    """What a trial may read: ``train`` (D~: networks are trained or BN is
    recalibrated on it), ``val`` (the held-out split scores are measured
    on) and ``dataset`` (the source's name: it picks the augmentation)."""

    train: Dataset
    val: Dataset
    dataset: str = ""


OnEpoch = Callable[[int, dict[str, float]], None]


class Evaluator(ABC):
    name: ClassVar[str]
    Config: ClassVar[type[Section]]
    needs_supernet: ClassVar[bool] = False

    def __init__(self, space: Any, config: Any, device: torch.device | str = "cpu",
                 on_epoch: Optional[OnEpoch] = None) -> None:
        self.space, self.config, self.device = space, config, torch.device(device)
        self.on_epoch = on_epoch  # called (epoch, metrics) after each training epoch, by evaluators that train

    @abstractmethod
    def evaluate(self, genotype: Any, data: EvalData, seed: int, budget: Optional[int] = None,
                 supernet: Optional[nn.Module] = None) -> dict[str, float]:
        """Metrics of ``genotype`` including ``score`` (larger is better).
        ``budget`` is the evaluator's fidelity (epochs for ``train``; None:
        its configured default); ``supernet`` is the trained supernet for
        evaluators with ``needs_supernet``."""


def _known_evaluator(value: str) -> str:
    if value not in EVALUATORS:
        raise ValueError(f"allowed: {', '.join(EVALUATORS.names())}")
    return value


EvaluatorName = Annotated[str, AfterValidator(_known_evaluator)]
"""A params key naming a registered evaluator (checked when validated)."""


def evaluator_config(name: str, params: Any = None) -> Section:
    """The validated config of evaluator ``name`` from a model instance, a
    mapping of its section or None (its defaults)."""
    return validated_section(EVALUATORS.get(name).Config, params, f"evaluators.{name}", EvaluatorError)


def create_evaluator(name: str, space: Any, params: Any = None, device: torch.device | str = "cpu",
                     on_epoch: Optional[OnEpoch] = None) -> Evaluator:
    """Build registered evaluator ``name`` for ``space`` with ``params`` (its
    Config, a mapping of its ``evaluators.<name>`` section, or None);
    ``on_epoch`` sees each epoch of an evaluator that trains (live
    progress)."""
    cls = EVALUATORS.get(name)
    return cls(space, evaluator_config(name, params), device, on_epoch)
