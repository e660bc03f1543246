"""Training a genotype as one fan-out item (evaluate and retrain stages).

``train_candidate(job)`` is a module-level function of one picklable
:class:`TrainJob`, so it runs unchanged in a thread or in a Dask worker
process: it loads the splits itself (index views over the data), sets the
torch thread count, builds the child network with a private seed and calls
nas_core.train.fit. It never talks to MLflow; :func:`log_history` logs the
returned dict into a nested run from the calling thread.

The network comes from the space of ``search.strategy``
(:func:`network_fields`, chosen once per stage): a layer-wise child
(``build_child`` of the pretrain space) or, for a cell strategy, the final
DARTS network of a :class:`~nas_core.spaces.cell.CellGenotype`
(``search.cell.final_channels`` / ``final_cells``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from flows.runners import worker_device
from nas_core.config import DataConfig, Params
from nas_core.data.subset import load_splits
from nas_core.spaces import Genotype, make_space
from nas_core.spaces.cell import CellGenotype
from nas_core.supernet.cell import CellNetwork
from nas_core.supernet.layerwise import build_child
from nas_core.train.fit import FitSettings, fit, seeded
from tasks.search_cell import is_cell_strategy

CELL_SPACE = "cell"


@dataclass(frozen=True)
class TrainJob:
    name: str
    genotype: dict[str, Any]  # Genotype.to_dict() or CellGenotype.to_dict()
    space: str  # a layer-wise space name, or CELL_SPACE
    preset: str  # the layer-wise preset, or the cell op set
    settings: FitSettings
    data: DataConfig
    project_root: str
    subset_dir: str
    train_split: str
    val_split: str = "val"
    test_split: Optional[str] = None
    device: str = "cpu"  # runtime.device; the worker resolves it (flows.runners.worker_device)
    threads: int = 1
    keep_state: bool = False
    cell_shape: Optional[tuple[int, int]] = None  # (channels, cells) of the final cell network


def network_fields(params: Params) -> dict[str, Any]:
    """TrainJob's network fields for the space of ``search.strategy``."""
    if is_cell_strategy(params.search.strategy):
        cfg = params.search.cell
        return {"space": CELL_SPACE, "preset": cfg.op_set, "cell_shape": (cfg.final_channels, cfg.final_cells)}
    return {"space": params.pretrain.space, "preset": params.pretrain.preset, "cell_shape": None}


def build_network(job: TrainJob, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The untrained network of ``job.genotype`` (call under ``seeded``)."""
    if job.space == CELL_SPACE:
        if job.cell_shape is None:
            raise ValueError(f"{job.name}: a cell network needs cell_shape (channels, cells)")
        channels, cells = job.cell_shape
        return CellNetwork(CellGenotype.from_dict(job.genotype), int(input_shape[0]), num_classes, channels, cells)
    space = make_space(job.space, job.preset, input_shape, num_classes)
    return build_child(space, Genotype.from_dict(job.genotype))


@dataclass(frozen=True)
class RetrainSpace:
    """The space-specific parts of the retrain stage (one per space, chosen
    once): the search stage's baseline genotype, a one-line description of a
    genotype, its cost (flops, params, latency_ms) and how N* is saved."""

    baseline: Callable[[], dict[str, Any]]
    label: Callable[[dict[str, Any]], str]
    cost: Callable[[dict[str, Any]], dict[str, Any]]
    save: Callable[[Path, dict[str, Any]], None]  # (model dir, train_candidate's result with state_dict)


def train_candidate(job: TrainJob) -> dict[str, Any]:
    """Train ``job.genotype`` from scratch; return its history and scores."""
    torch.set_num_threads(job.threads)
    source, splits = load_splits(job.data, Path(job.project_root), Path(job.subset_dir))
    with seeded(job.settings.seed):
        model = build_network(job, source.input_shape, source.num_classes)
    result = fit(model, splits[job.train_split], splits[job.val_split], job.settings, worker_device(job.device),
                 test_set=splits[job.test_split] if job.test_split else None, dataset=source.name)
    out = {"name": job.name, "genotype": job.genotype, "history": result.history, "val_acc": result.val_acc,
           "best_val_acc": result.best_val_acc, "test_acc": result.test_acc, "seconds": result.seconds}
    if job.keep_state:
        out["state_dict"] = result.state_dict
    return out


def log_history(log: Any, result: dict[str, Any], prefix: str = "") -> None:
    """Per-epoch metrics of one trained candidate (step = epoch)."""
    for row in result["history"]:
        log.log_metrics({f"{prefix}{k}": v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))
