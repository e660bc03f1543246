"""search stage: the chosen strategy's own result. For a one-shot strategy
it loads the pretrain stage's final checkpoint and derives the strategy's
genotype (FBNet: argmax θ per layer; the DARTS family: DARTS's rule on the
op and edge weights; P-DARTS: with its skip-connect cap). A multi-trial
strategy runs its trials here (tasks/trials.py) and its genotype is the
best trial's; its tables for DC-NAS are its supernet strategy's (the
pretrain stage's final ones), or the space's uniform tables when it has no
supernet.

The output persists between runs (a killed multi-trial search resumes from
its trial table); like pretrain's it is cleared when another strategy or
space writes it, and every file is written atomically.

Outputs (``ctx.out``):

* ``genotype.json`` (``genotype.to_dict()``, reloadable with the space's
  ``genotype_from_dict``) and ``genotype.png`` (the space's ``render``);
* ``tables.npz``: the architecture-probability tables DC-NAS samples from
  and scores with, plus one CSV per table (rows: layers or edges, columns:
  choices);
* ``cost.json``: the space's ``cost`` of the genotype (FLOPs, params,
  latency where the space has a measured table);
* ``summary.json`` (strategy, space, label, checkpoint epoch or trials)
  and the strategy's figures and arrays; all logged to MLflow;
* multi-trial: ``trials.jsonl`` / ``trials.csv`` (the trial table),
  ``best_so_far.png`` and ``pareto.png``.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from nas_core.config import Params
from nas_core.io import atomic_path, save_npy, write_json
from nas_core.spaces import SearchSpace
from nas_core.strategies import SearchResult, SearchStrategy
from tasks.context import StageContext
from tasks.nas import (
    GENOTYPE,
    TABLES,
    build_space,
    build_strategy,
    keep_one_owner,
    last_epoch_metrics,
    restored,
    save_tables,
)
from tasks.tracking import log_figure_file
from tasks.trials import run_search

SECTIONS = ("search", "evaluators")
PERSISTENT = True


def one_shot_result(params: Params, ctx: StageContext, space: SearchSpace, strategy: SearchStrategy
                    ) -> tuple[SearchResult, SearchStrategy, dict[str, float]]:
    _, trained = restored(params, ctx, space)  # from the final checkpoint, whose epoch is the last
    return trained.derive(), trained, {"checkpoint_epoch": float(trained.num_epochs())}


def multi_trial_result(params: Params, ctx: StageContext, space: SearchSpace, strategy: Any
                       ) -> tuple[SearchResult, SearchStrategy, dict[str, float]]:
    trials = run_search(params, ctx, strategy)
    tables = restored(params, ctx, space)[1].tables() if strategy.supernet_name() else None
    return strategy.result(tables), strategy, {"trials": float(len(trials))}


RESULT = {"one_shot": one_shot_result, "multi_trial": multi_trial_result}


def run(params: Params, ctx: StageContext) -> dict[str, float]:
    space = build_space(params, ctx)
    chosen = build_strategy(params, ctx, space)
    keep_one_owner(ctx.out, f"{chosen.name} on {space.name}")
    result, strategy, info = RESULT[chosen.kind](params, ctx, space, chosen)
    genotype = result.genotype
    write_json(ctx.out / GENOTYPE, genotype.to_dict())
    space.render(genotype, ctx.out / "genotype.png", title=f"{strategy.name}: {space.label(genotype)}")
    save_tables(ctx.out / TABLES, result.tables)
    for name, table in result.tables.items():
        write_table(ctx.out / f"{name}.csv", table)
    cost = space.cost(genotype)
    write_json(ctx.out / "cost.json", {**cost, "flops_convention": "multiply-adds per image"})
    write_json(ctx.out / "summary.json", {"strategy": strategy.name, "space": space.name,
                                          "genotype": space.label(genotype), **info})
    for name, array in strategy.arrays().items():
        save_npy(ctx.out / f"{name}.npy", array)
    for name, figure in strategy.figures(result).items():
        log_figure_file(ctx.log, figure, ctx.out, name)
    ctx.log.set_tags({"nasflow.genotype": space.label(genotype)[:5000]})
    for path in sorted(ctx.out.glob("*.json*")) + sorted(ctx.out.glob("*.csv")) + [ctx.out / "genotype.png"]:
        ctx.log.log_artifact(path, "search")
    last = last_epoch_metrics(result.history)
    return {**last, **{k: float(v) for k, v in cost.items() if v is not None}, **info}


def write_table(path: Path, table: np.ndarray) -> None:
    """A 1-D or 2-D table as CSV: one row per layer/edge, one column per choice."""
    table = np.asarray(table, dtype=np.float64)
    table = table[:, None] if table.ndim == 1 else table
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["row", *range(table.shape[1])])
        for i, row in enumerate(table):
            writer.writerow([i, *(f"{v:.6g}" for v in row)])
