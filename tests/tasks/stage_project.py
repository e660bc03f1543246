"""A tiny project for stage tests: digits splits written by the subset
stage's code (tasks.project), params shrunk to seconds (every registered
strategy cut to 2 epochs, DC-NAS to a few architectures), and a
StageContext logging to a temporary sqlite MLflow store, fanning out in
order."""
from __future__ import annotations

from pathlib import Path

from nas_core.config import Params, load_params, validate_params
from tasks import project
from tasks.project import stage_context
from tasks.tracking import RunLogger
from tests.conftest import REPO

TINY = {
    "runtime": {"device": "cpu", "seed": 0, "max_workers": 2},
    "subset": {"fraction": 0.1, "probe_size": 16},
    "spaces": {"cell": {"final_cells": 3, "final_channels": 4, "auxiliary_weight": 0.0},  # recipe: test_recipe.py
               "layerwise": {"latency_repeats": 1},
               "global_cell": {"cells": 3, "final_channels": 4, "auxiliary_weight": 0.0},
               "dso": {"levels": 2, "stages": 2, "blocks_per_stage": 1, "init_channels": 4}},
    "dcnas_sample": {"num_samples": 20},
    "dcnas_features": {"probe_batch_size": 16},
    "dcnas_cluster": {"k": 2, "silhouette_sample": 20},
    "evaluate": {"epochs": 1},
    "retrain": {"epochs": 1, "batch_size": 128, "augment": False, "random_control": False},
}


def tiny_strategies() -> dict:
    """Every strategy's params.yaml section cut to 2 epochs (per stage), or
    to 4 trials with a 1-epoch budget."""
    out = {}
    for name, config in load_params(REPO / "params.yaml").strategies:
        section = config.model_dump()
        if "epochs" in section:
            section["epochs"] = 2
        if "trials" in section:
            section.update(trials=4, batch=2, budget=1)
        if "warmup_epochs" in section:
            section["warmup_epochs"] = min(section["warmup_epochs"], 1)
        out[name] = section
    return out


def tiny_params(**sections: dict) -> Params:
    raw = {k: {kk: (dict(vv) if isinstance(vv, dict) else vv) for kk, vv in v.items()} for k, v in TINY.items()}
    raw["strategies"] = tiny_strategies()
    for name, values in sections.items():
        for key, value in values.items():
            target = raw.setdefault(name, {})
            if isinstance(value, dict) and isinstance(target.get(key), dict):
                target[key] = {**target[key], **value}
            else:
                target[key] = value
    return validate_params(raw)


def make_project(root: Path, params: Params) -> Path:
    """data/ (a link to the repo's digits) and the subset stage's splits."""
    return project.make_project(root, params, REPO / "data")


def run_stage(root: Path, params: Params, module, name: str, parent: RunLogger | None = None):
    """``module.run`` as the runner calls it; (metrics, ctx)."""
    ctx = stage_context(root, params, name, parent)
    metrics = module.run(params, ctx)
    ctx.log.end("FINISHED")
    return metrics, ctx
