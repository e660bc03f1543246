"""A stage project in a folder, for running stages from Python (notebooks,
benchmarks, tests) without DVC: the data linked in, the subset stage's
splits written, and the :class:`StageContext` the runner would build, logging
to a sqlite MLflow store in the folder."""
from __future__ import annotations

from pathlib import Path

import torch

from nas_core.config import Params
from nas_core.data import load_source, make_splits, write_splits
from tasks.context import StageContext
from tasks.tracking import RunLogger


def make_project(root: Path, params: Params, data: Path) -> Path:
    """``root`` with ``data/`` linked to ``data`` and the subset stage's
    splits under ``artifacts/subset``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "data").symlink_to(data)
    source = load_source(params.data, root)
    splits = make_splits(source.train_targets, source.test_targets, params.data, params.subset, params.runtime.seed)
    write_splits(splits, source, root / "artifacts" / "subset", params.runtime.seed)
    return root


def stage_context(root: Path, params: Params, stage: str, parent: RunLogger | None = None,
                  experiment: str = "tests") -> StageContext:
    """The context the runner would build for ``stage`` (output written in
    place, on the CPU), its run nested under ``parent`` (default: a new
    ``pipeline`` run of ``experiment`` in ``root/mlflow.db``)."""
    out = root / "artifacts" / stage
    out.mkdir(parents=True, exist_ok=True)
    if parent is None:
        parent = RunLogger.start(f"sqlite:///{root}/mlflow.db", experiment, "pipeline", root)
    log = parent.child(f"stage:{stage}")
    return StageContext(stage, root, params, out, torch.device("cpu"), log)
