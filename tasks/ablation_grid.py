"""ablation_grid stage: the Table-1 grid K × η against random search
(dc-nas.md §4.1), with regret and Kendall τ in ground-truth mode.

Reads artifacts/ablation_train/. Every network any rule needs is fully
trained on D once (cached per architecture in ``full/``, a persistent
output, so a rerun or a larger grid reuses them). Writes ``table1.csv``
(one row per rule), ``table1.md`` (Table-1 layout, regret, τ, Table-2 picks),
``table2.csv`` and ``full.csv`` (every full-training result); the DVC plots
metrics/ablation_table1.csv and metrics/ablation_heatmap.png; prints the
markdown at the end.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from nas_core.ablation import report
from nas_core.ablation.full import full_job
from nas_core.ablation.grid import GridPlan, plan_grid, score_grid
from nas_core.ablation.separate import make_jobs, spec_from_config
from nas_core.ablation.store import pending, run_cached
from nas_core.config import AblationConfig, Params
from nas_core.io import load_npy
from tasks.ablation_data import ablation_space, architecture_map, full_data
from tasks.context import StageContext
from tasks.tracking import log_figure_file

SECTIONS = ("ablation", "spaces.channel_ratio")
PERSISTENT = True
TABLE2_K = 5


def run(params: Params, ctx: StageContext) -> dict[str, float]:
    cfg, seed = params.ablation, params.runtime.seed
    src = ctx.artifacts("ablation_train")
    features = load_npy(src / f"features_{cfg.features}.npy")
    es_acc = load_npy(src / "es_acc.npy")
    meta = pd.DataFrame(json.loads((src / "archs.json").read_text()))
    check_inputs(cfg, features, es_acc)
    plan = plan_grid(features, es_acc, cfg.eta_list, cfg.k_list, cfg.rs_fraction, cfg.rs_repeats,
                     cfg.ground_truth, seed)
    full = train_needed(params, ctx, plan, meta)
    full_val, full_test = (full_array(full, meta, col) for col in ("val_acc", "test_acc"))
    frame = report.rows_frame(score_grid(plan, es_acc, full_val, full_test))
    text = write_reports(ctx, cfg, plan, frame, meta, es_acc, full_val, full_test)
    print(text)
    return summary_metrics(cfg, frame, len(full))


def check_inputs(cfg: AblationConfig, features: np.ndarray, es_acc: np.ndarray) -> None:
    if features.ndim != 3 or features.shape[2] < max(cfg.eta_list) or es_acc.shape != (len(features), features.shape[2]):
        raise ValueError(f"artifacts/ablation_train holds features {features.shape} and accuracies {es_acc.shape}: "
                         f"need (s, L, >= {max(cfg.eta_list)}) and (s, same); rerun ablation_train")


def train_needed(params: Params, ctx: StageContext, plan: GridPlan, meta: pd.DataFrame) -> pd.DataFrame:
    """Fully train (or reuse) every network the plan needs."""
    cfg = params.ablation
    space = ablation_space(params, ctx)
    indices = meta["index"].to_numpy()[plan.needed()]
    jobs = make_jobs(indices, space, spec_from_config(cfg, full=True), full_data(ctx), ctx.device,
                     params.runtime.seed, ctx.out / "full", "full")
    ctx.log.log_metrics({"full_trained_now": len(pending(jobs)), "full_needed": len(jobs)})
    records = run_cached(jobs, full_job, architecture_map(params, ctx, "full training"))
    frame = pd.DataFrame([{k: r[k] for k in ("index", "val_acc", "test_acc", "seconds")} for r in records])
    report.write_csv(frame, ctx.out / "full.csv")
    return frame


def full_array(full: pd.DataFrame, meta: pd.DataFrame, column: str) -> np.ndarray:
    """(s,) per sampled row, NaN where the network was not fully trained."""
    return meta["index"].map(full.set_index("index")[column]).to_numpy(dtype=np.float64)


def write_reports(ctx: StageContext, cfg: AblationConfig, plan: GridPlan, frame: pd.DataFrame,
                  meta: pd.DataFrame, es_acc: np.ndarray, full_val: np.ndarray, full_test: np.ndarray) -> str:
    report.write_csv(frame, ctx.out / "table1.csv")
    sections = {"Top-1 test accuracy (%) of the chosen architecture (Table 1 layout)":
                report.grid_table(frame, cfg.eta_list, cfg.k_list, "test_acc", "Top-1 acc(%)")}
    if cfg.ground_truth:
        sections["Regret (percentage points below the best of the s sampled networks)"] = \
            report.grid_table(frame, cfg.eta_list, cfg.k_list, "regret", "Regret")
        sections["Kendall τ between early-stopping and final test accuracy"] = \
            report.tau_table(frame, cfg.eta_list, cfg.k_list)
    cell = table2_cell(plan)
    picks = report.table2(cell, meta, es_acc, full_val, full_test)
    report.write_csv(picks, ctx.out / "table2.csv")
    chosen = int(frame[(frame.rule == "dcnas") & (frame.eta == cell.eta) & (frame.k == cell.k)].chosen.iloc[0])
    sections[f"Per-cluster picks, K = {cell.k}, η = {cell.eta} (Table 2 layout)"] = \
        report.table2_markdown(picks, cell.eta, chosen)
    text = report.write_markdown(ctx.out / "table1.md", sections)
    report.write_csv(frame, ctx.root / "metrics" / "ablation_table1.csv")
    log_figure_file(ctx.log, report.heatmap(frame, cfg.eta_list, cfg.k_list), ctx.root / "metrics",
                    "ablation_heatmap.png")
    for name in ("table1.csv", "table1.md", "table2.csv", "full.csv"):
        ctx.log.log_artifact(ctx.out / name, "ablation_grid")
    return text


def table2_k(k_list: list[int]) -> int:
    """The paper's headline K = 5 (Table 2), else the largest K of the grid."""
    return TABLE2_K if TABLE2_K in k_list else max(k_list)


def table2_cell(plan: GridPlan):
    """The Table-2 cell: K from ``table2_k`` at the largest η."""
    eta = max(c.eta for c in plan.cells)
    k = table2_k([c.k for c in plan.cells])
    return next(c for c in plan.cells if c.eta == eta and c.k == k)


def summary_metrics(cfg: AblationConfig, frame: pd.DataFrame, full_count: int) -> dict[str, float]:
    """Flat metrics for DVC and MLflow: every cell's test accuracy (and
    regret), plus the headline comparison at the largest η: global early
    stopping (K = 1), DC-NAS and random search at the Table-2 K."""
    metrics: dict[str, float] = {"full_trained": full_count}
    for row in frame.itertuples():
        name = f"rs.k{row.k}" if row.rule == "random" else f"eta{row.eta}.k{row.k}"
        metrics[f"{name}.test_acc"] = row.test_acc
        if cfg.ground_truth:
            metrics[f"{name}.regret"] = row.regret
    dc, eta_max, k = frame[frame.rule == "dcnas"], max(cfg.eta_list), table2_k(cfg.k_list)
    at_eta = dc[dc.eta == eta_max]
    if 1 in cfg.k_list:
        metrics["global_es.test_acc"] = float(at_eta[at_eta.k == 1].test_acc.iloc[0])
    metrics["dcnas.test_acc"] = float(at_eta[at_eta.k == k].test_acc.iloc[0])
    metrics["rs.test_acc"] = float(frame[(frame.rule == "random") & (frame.k == k)].test_acc.iloc[0])
    if cfg.ground_truth:
        metrics["tau_global"] = float(at_eta.tau_global.iloc[0])
    return {name: float(value) for name, value in metrics.items()}
