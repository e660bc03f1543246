"""What a stage function receives: paths, device, data splits, the MLflow
run, a progress-bar factory and the fan-out executor. ``tasks/<stage>.py``
exposes ``run(params, ctx) -> dict`` and never opens files outside ``ctx``'s
paths.

``fan_out(fn, items, runtime, names, flow_name)`` maps a picklable
module-level function over items. The launcher hands in the Prefect
task-runner executor (flows/fanout.py: threads, Dask, Ray); the default runs
the items one after another in this process (stage functions called
directly, e.g. from tests or a notebook)."""
from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from nas_core.config import Params
from nas_core.data import DataSource, load_splits
from tasks.tracking import RunLogger

ARTIFACTS = "artifacts"
FanOut = Callable[..., list[Any]]


def in_order(fn: Callable[[Any], Any], items: Sequence[Any], runtime: Any = None, names: Any = None,
             flow_name: str = "") -> list[Any]:
    """The in-process fan-out: ``[fn(item) for item in items]``."""
    return [fn(item) for item in items]


@dataclass(frozen=True)
class DataInfo:
    name: str
    num_classes: int
    input_shape: tuple[int, int, int]


@dataclass
class StageContext:
    name: str
    root: Path
    params: Params
    out: Path
    device: torch.device
    log: RunLogger
    fan_out: FanOut = in_order
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def artifacts(self, stage: str) -> Path:
        """Another stage's output directory (an input of this one)."""
        return self.root / ARTIFACTS / stage

    def _load(self) -> tuple[DataSource, dict[str, Dataset]]:
        if "splits" not in self._cache:
            self._cache["splits"] = load_splits(self.params.data, self.root, self.artifacts("subset"))
        return self._cache["splits"]

    def splits(self) -> dict[str, Dataset]:
        return self._load()[1]

    def source(self) -> DataSource:
        return self._load()[0]

    @functools.cached_property
    def data_info(self) -> DataInfo:
        source = self._load()[0]
        return DataInfo(source.name, source.num_classes, source.input_shape)

    def fan_out_with_runs(self, fn: Callable[[Any], Any], items: Sequence[Any], runs: Sequence[Any],
                          names: Sequence[str], flow_name: str) -> list[Any]:
        """:attr:`fan_out` for items that each own a nested MLflow run
        (``runs``, created in the calling thread): when the fan-out fails,
        every one of those runs is ended FAILED before the error propagates."""
        try:
            return self.fan_out(fn, items, self.params.runtime, names=names, flow_name=flow_name)
        except BaseException:
            for log in runs:
                log.end("FAILED")
            raise

    def progress(self, iterable: Optional[Iterable] = None, desc: str = "", total: Optional[int] = None, **kw: Any):
        """A tqdm bar on stderr; redraws at most every few seconds when
        stderr is not a terminal (logs stay readable)."""
        interval = 0.1 if sys.stderr.isatty() else float(os.environ.get("NASFLOW_PROGRESS_INTERVAL", "5"))
        return tqdm(iterable, desc=f"[{self.name}] {desc}".strip(), total=total, mininterval=interval,
                    dynamic_ncols=True, **kw)
