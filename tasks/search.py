"""search stage: the chosen strategy's own result. For a one-shot strategy
it loads the pretrain stage's final checkpoint and derives the strategy's
genotype (FBNet: argmax θ per layer; the DARTS family: DARTS's rule on the
op and edge weights; P-DARTS: with its skip-connect cap).

Outputs (``ctx.out``):

* ``genotype.json`` (``genotype.to_dict()``, reloadable with the space's
  ``genotype_from_dict``) and ``genotype.png`` (the space's ``render``);
* ``tables.npz``: the architecture-probability tables DC-NAS samples from
  and scores with, plus one CSV per table (rows: layers or edges, columns:
  choices);
* ``cost.json``: the space's ``cost`` of the genotype (FLOPs, params,
  latency where the space has a measured table);
* ``summary.json`` (strategy, space, label, checkpoint epoch) and the
  strategy's figures and arrays; all logged to MLflow.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from nas_core.config import Params
from nas_core.io import atomic_path, save_npy, write_json
from tasks.nas import GENOTYPE, TABLES, last_epoch_metrics, restored, save_tables
from tasks.tracking import log_figure_file

SECTIONS = ("search",)


def run(params: Params, ctx: Any) -> dict[str, float]:
    space, strategy, state = restored(params, ctx)
    result = strategy.derive()
    genotype = result.genotype
    write_json(ctx.out / GENOTYPE, genotype.to_dict())
    space.render(genotype, ctx.out / "genotype.png", title=f"{strategy.name}: {space.label(genotype)}")
    save_tables(ctx.out / TABLES, result.tables)
    for name, table in result.tables.items():
        write_table(ctx.out / f"{name}.csv", table)
    cost = space.cost(genotype)
    write_json(ctx.out / "cost.json", {**cost, "flops_convention": "multiply-adds per image"})
    write_json(ctx.out / "summary.json", {"strategy": strategy.name, "space": space.name,
                                          "genotype": space.label(genotype), "checkpoint_epoch": int(state["epoch"])})
    for name, array in strategy.arrays().items():
        save_npy(ctx.out / f"{name}.npy", array)
    for name, figure in strategy.figures(result).items():
        log_figure_file(ctx.log, figure, ctx.out, name)
    ctx.log.set_tags({"nasflow.genotype": space.label(genotype)[:5000]})
    for path in sorted(ctx.out.glob("*.json")) + sorted(ctx.out.glob("*.csv")) + [ctx.out / "genotype.png"]:
        ctx.log.log_artifact(path, "search")
    last = last_epoch_metrics(result.history)
    return {**last, **{k: float(v) for k, v in cost.items() if v is not None},
            "checkpoint_epoch": float(state["epoch"])}


def write_table(path: Path, table: np.ndarray) -> None:
    """A 1-D or 2-D table as CSV: one row per layer/edge, one column per choice."""
    table = np.asarray(table, dtype=np.float64)
    table = table[:, None] if table.ndim == 1 else table
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["row", *range(table.shape[1])])
        for i, row in enumerate(table):
            writer.writerow([i, *(f"{v:.6g}" for v in row)])
