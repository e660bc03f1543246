"""Runs one stage: params -> seeding/device -> MLflow run (with the dataset
as its inputs) -> ``run()`` -> atomic outputs -> metrics. Used by
``nasflow stage <name>`` (the ``cmd`` of every dvc.yaml stage)."""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from nas_core.config import Params, ParamsError, load_params
from nas_core.io import atomic_dir
from nas_core.runtime import resolve_device, seed_everything, set_threads
from tasks.context import ARTIFACTS, FanOut, StageContext, in_order
from tasks.nas import chosen_sections
from tasks.tracking import (
    FLOW_RUN_ENV,
    PARENT_ENV,
    RunLogger,
    check_server,
    dataset_inputs,
    dvc_lock_entry_hash,
    git_commit,
    tracking_uri,
    write_stage_metrics,
)

COMMON_SECTIONS = ("data", "runtime")


#: Pipelines run on purpose beside the main dvc.yaml (`dvc repro` there never starts them).
STUDY_PIPELINES = ("ablation/dvc.yaml",)


def stage_names(root: Path) -> list[str]:
    """The stages dvc.yaml defines (the DAG's single definition), then those
    of the study pipelines."""
    names: list[str] = []
    for dvc_yaml in (root / "dvc.yaml", *(root / p for p in STUDY_PIPELINES)):
        if dvc_yaml.is_file():
            names += list((yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {}))
    return names


def load_stage_module(name: str, root: Path) -> ModuleType:
    known = stage_names(root)
    if name not in known:
        raise ParamsError(f"stage {name!r}: not in dvc.yaml (stages: {', '.join(known) or 'none'})")
    return importlib.import_module(f"tasks.stages.{name}")


def start_stage_run(module: ModuleType, name: str, params: Params, root: Path) -> RunLogger:
    uri = tracking_uri(params, root)
    check_server(uri, params.tracking.retries)
    tags = {"nasflow.stage": name, "mlflow.source.git.commit": git_commit(root),
            "dvc.lock.previous": dvc_lock_entry_hash(root, name)}
    if os.environ.get(FLOW_RUN_ENV):
        tags["prefect.flow_run_id"] = os.environ[FLOW_RUN_ENV]
    log = RunLogger.start(uri, params.tracking.experiment, f"stage:{name}", root,
                          parent_run_id=os.environ.get(PARENT_ENV) or None, tags=tags)
    log.log_params(logged_sections(params, tuple(getattr(module, "SECTIONS", (name,)))))
    return log


def logged_sections(params: Params, own: tuple[str, ...]) -> dict[str, Any]:
    """The params a stage logs: data, runtime and its own sections (dotted
    names such as ``spaces.channel_ratio`` pick one sub-section); ``search``
    stands for the chosen space's and strategy's sections, not every
    registered one."""
    out: dict[str, Any] = {}
    for dotted in (*COMMON_SECTIONS, *own):
        if dotted == "search":
            out.update(chosen_sections(params))
            continue
        node: Any = params
        for part in dotted.split("."):
            node = getattr(node, part)
        out[dotted] = node.model_dump(mode="json")
    return out


def run_stage(name: str, params_path: str | Path = "params.yaml", root: Path | None = None,
              fan_out: FanOut = in_order) -> dict[str, Any]:
    """Run stage ``name``; ``fan_out`` is the executor its fan-outs use
    (the launcher's task runner; default: in order in this process)."""
    root = (root or Path.cwd()).resolve()
    params = load_params(root / params_path)
    module = load_stage_module(name, root)
    seed_everything(params.runtime.seed, params.runtime.deterministic)
    set_threads(params.runtime.threads)
    device = resolve_device(params.runtime.device)
    log = start_stage_run(module, name, params, root)
    ctx = StageContext(name, root, params, root / ARTIFACTS / name, device, log, fan_out)
    manifest = ctx.artifacts("subset") / "manifest.json"
    writes_manifest = manifest.parent == ctx.out  # the subset stage: its inputs are known once it is done
    try:
        if not writes_manifest:
            log.log_inputs(dataset_inputs(params.data, root, manifest))
        metrics = _execute(module, ctx)
        if writes_manifest:
            log.log_inputs(dataset_inputs(params.data, root, manifest))
        write_stage_metrics(root, name, metrics, log)
    except BaseException:
        log.end("FAILED")
        raise
    log.end("FINISHED")
    return metrics


def _execute(module: ModuleType, ctx: StageContext) -> dict:
    """``module.run`` with outputs written in place (persistent stages) or
    into a staging directory renamed into place on success."""
    if getattr(module, "PERSISTENT", False):
        ctx.out.mkdir(parents=True, exist_ok=True)
        return module.run(ctx.params, ctx)
    with atomic_dir(ctx.out) as staging:
        ctx.out = staging
        return module.run(ctx.params, ctx)
