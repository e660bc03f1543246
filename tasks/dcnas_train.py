"""Training a genotype as one fan-out item (evaluate and retrain stages).

``train_candidate(job)`` is a module-level function of one picklable
:class:`TrainJob`, so it runs unchanged in a thread or in a Dask worker
process: it loads the splits itself (index views over the data), sets the
torch thread count, builds the genotype's network with the space's
``build_network`` under a private seed and calls nas_core.train.fit. With a
``job.live`` (tasks/live.py, made by the caller from the task's nested run)
each epoch's metrics go to that run as the task trains, with a progress line
in the stage log; :func:`log_history` then logs, from the calling thread,
only the epochs that were not logged live (all of them without a LiveRun).
The job carries the space itself (a frozen, picklable value), so a worker
needs nothing else to build the network.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from nas_core.config import DataConfig
from nas_core.data.subset import load_splits
from nas_core.spaces import SearchSpace
from nas_core.train.fit import FitSettings, fit, seeded
from tasks.live import LiveRun, epoch_callback, epoch_metrics, unlogged_rows
from tasks.placement import worker_device


@dataclass(frozen=True)
class TrainJob:
    name: str
    space: SearchSpace
    genotype: dict[str, Any]  # the genotype's to_dict()
    settings: FitSettings
    data: DataConfig
    project_root: str
    subset_dir: str
    train_split: str
    val_split: str = "val"
    test_split: Optional[str] = None
    device: str = "cpu"  # runtime.device; the worker resolves it (tasks.placement.worker_device)
    threads: int = 1
    keep_state: bool = False
    live: Optional[LiveRun] = None  # where each epoch is reported as it ends


def train_candidate(job: TrainJob) -> dict[str, Any]:
    """Train ``job.genotype`` from scratch; return its history and scores."""
    torch.set_num_threads(job.threads)
    source, splits = load_splits(job.data, Path(job.project_root), Path(job.subset_dir))
    with seeded(job.settings.seed):
        model = job.space.build_network(job.space.genotype_from_dict(job.genotype))
    reporter = epoch_callback(job.live)
    result = fit(model, splits[job.train_split], splits[job.val_split], job.settings, worker_device(job.device),
                 test_set=splits[job.test_split] if job.test_split else None, dataset=source.name,
                 on_epoch=reporter)
    out = {"name": job.name, "genotype": job.genotype, "history": result.history, "val_acc": result.val_acc,
           "best_val_acc": result.best_val_acc, "test_acc": result.test_acc, "seconds": result.seconds,
           "live_epochs": list(reporter.logged_epochs) if reporter is not None else []}
    if job.keep_state:
        out["state_dict"] = result.state_dict
    return out


def log_history(log: Any, result: dict[str, Any], prefix: str = "") -> None:
    """Per-epoch metrics of one trained candidate (step = epoch), except the
    epochs its worker already logged live."""
    for row in unlogged_rows(result):
        log.log_metrics(epoch_metrics(row, prefix), step=int(row["epoch"]))
