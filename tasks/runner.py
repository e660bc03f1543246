"""Runs one stage: params -> seeding/device -> MLflow run -> ``run()`` ->
atomic outputs -> metrics. Used by ``nasflow stage <name>`` (the ``cmd`` of
every dvc.yaml stage)."""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from nas_core.config import ParamsError, Params, load_params, section_dict
from nas_core.io import atomic_dir
from nas_core.runtime import resolve_device, seed_everything, set_threads
from tasks.context import ARTIFACTS, StageContext
from tasks.tracking import (FLOW_RUN_ENV, PARENT_ENV, RunLogger, check_server, dvc_lock_entry_hash,
                            git_commit, tracking_uri, write_stage_metrics)

COMMON_SECTIONS = ("data", "runtime")


def stage_names(root: Path) -> list[str]:
    """The stages dvc.yaml defines (the DAG's single definition)."""
    dvc_yaml = root / "dvc.yaml"
    if not dvc_yaml.is_file():
        return []
    return list((yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {}))


def load_stage_module(name: str, root: Path) -> ModuleType:
    known = stage_names(root)
    if name not in known:
        raise ParamsError(f"stage {name!r}: not in dvc.yaml (stages: {', '.join(known) or 'none'})")
    return importlib.import_module(f"tasks.{name}")


def start_stage_run(module: ModuleType, name: str, params: Params, root: Path) -> RunLogger:
    uri = tracking_uri(params, root)
    check_server(uri, params.tracking.retries)
    tags = {"nasflow.stage": name, "mlflow.source.git.commit": git_commit(root),
            "dvc.lock.previous": dvc_lock_entry_hash(root, name)}
    if os.environ.get(FLOW_RUN_ENV):
        tags["prefect.flow_run_id"] = os.environ[FLOW_RUN_ENV]
    log = RunLogger.start(uri, params.tracking.experiment, f"stage:{name}", root,
                          parent_run_id=os.environ.get(PARENT_ENV) or None, tags=tags)
    own = tuple(getattr(module, "SECTIONS", (name,)))
    sections = [s for s in (*COMMON_SECTIONS, *own) if s in Params.model_fields]
    log.log_params({s: section_dict(params, s) for s in sections})
    return log


def run_stage(name: str, params_path: str | Path = "params.yaml", root: Path | None = None) -> dict[str, Any]:
    root = (root or Path.cwd()).resolve()
    params = load_params(root / params_path)
    module = load_stage_module(name, root)
    seed_everything(params.runtime.seed, params.runtime.deterministic)
    set_threads(params.runtime.threads)
    device = resolve_device(params.runtime.device)
    log = start_stage_run(module, name, params, root)
    try:
        metrics = _execute(module, name, params, root, device, log)
        write_stage_metrics(root, name, metrics, log)
    except BaseException:
        log.end("FAILED")
        raise
    log.end("FINISHED")
    return metrics


def _execute(module: ModuleType, name: str, params: Params, root: Path, device: Any, log: RunLogger) -> dict:
    final = root / ARTIFACTS / name
    if getattr(module, "PERSISTENT", False):
        final.mkdir(parents=True, exist_ok=True)
        return module.run(params, StageContext(name, root, params, final, device, log))
    with atomic_dir(final) as staging:
        return module.run(params, StageContext(name, root, params, staging, device, log))
