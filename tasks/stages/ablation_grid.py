"""ablation_grid stage: the Table-1 grid K × η against random search at
equal compute (dc-nas.md §4.1), per replicate, then over replicates: mean ±
95 % CI of test accuracy and regret, paired Wilcoxon tests of every DC-NAS
cell against global early stopping and random search, Kendall τ with CIs
(nas_core/ablation/stats.py).

Reads artifacts/ablation_train/r<NNN>/. Every network any rule of any
replicate needs is fully trained on D once (cached per architecture in
``full/r<NNN>/``, a persistent output, so a rerun, a larger grid or more
replicates reuse them); all replicates fan out together. Writes
``report.md`` (setup, tables, verdict lines), ``rows.csv`` (one row per
rule and replicate), ``summary.csv``, ``comparisons.csv``, ``table2.csv``,
``full.csv``; the DVC plots metrics/ablation_table1.csv,
metrics/ablation_accuracy.png, metrics/ablation_regret.png,
metrics/ablation_tau.png; one nested MLflow run per replicate with its
cells' metrics; prints the report at the end.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nas_core.ablation import report, stats
from nas_core.ablation.full import full_job
from nas_core.ablation.grid import Budget, GridPlan, plan_grid, score_grid
from nas_core.ablation.replicates import by_replicate, replicate_dir, replicate_jobs
from nas_core.ablation.separate import spec_from_config
from nas_core.ablation.store import pending, run_cached
from nas_core.config import AblationConfig, Params
from nas_core.io import load_npy
from tasks.ablation_data import ablation_space, architecture_map, full_data
from tasks.context import StageContext
from tasks.tracking import log_figure_file

SECTIONS = ("ablation", "spaces.channel_ratio")
PERSISTENT = True
TABLE2_K = 5


@dataclass
class ReplicateInputs:
    """What ablation_train wrote for one replicate."""

    index: int
    seed: int
    subset_ratio: float
    features: np.ndarray
    es_acc: np.ndarray
    meta: pd.DataFrame


def run(params: Params, ctx: StageContext) -> dict[str, float]:
    cfg = params.ablation
    reps = [load_replicate(cfg, ctx.artifacts("ablation_train"), r) for r in range(cfg.repeats)]
    plans = {rep.index: plan_grid(rep.features, rep.es_acc, cfg.eta_list, cfg.k_list, budget_of(cfg, rep),
                                  cfg.rs_repeats, cfg.ground_truth, rep.seed) for rep in reps}
    full = train_needed(params, ctx, reps, plans)
    frames = [score_replicate(ctx, rep, plans[rep.index], full[rep.index]) for rep in reps]
    rows = pd.concat(frames, ignore_index=True)
    summary, comps = stats.summarise(rows), stats.comparisons(rows)
    text = write_reports(ctx, params, reps[0], plans[reps[0].index], full[reps[0].index], rows, summary, comps)
    print(text)
    return summary_metrics(cfg, summary, comps, sum(len(f) for f in full.values()))


def load_replicate(cfg: AblationConfig, src: Path, index: int) -> ReplicateInputs:
    folder = replicate_dir(src, index)
    if not (folder / "replicate.json").is_file():
        raise ValueError(f"{folder}: replicate {index} missing (ablation.repeats = {cfg.repeats}); "
                         "rerun ablation_train")
    info = json.loads((folder / "replicate.json").read_text())
    features = load_npy(folder / f"features_{cfg.features}.npy")
    es_acc = load_npy(folder / "es_acc.npy")
    check_inputs(cfg, folder, features, es_acc)
    meta = pd.DataFrame(json.loads((folder / "archs.json").read_text()))
    return ReplicateInputs(index, int(info["seed"]), float(info["subset_ratio"]), features, es_acc, meta)


def check_inputs(cfg: AblationConfig, folder: Path, features: np.ndarray, es_acc: np.ndarray) -> None:
    eta_max = max(cfg.eta_list)
    if features.ndim != 3 or features.shape[2] < eta_max or es_acc.shape != (len(features), features.shape[2]):
        raise ValueError(f"{folder} holds features {features.shape} and accuracies {es_acc.shape}: "
                         f"need (s, L, >= {eta_max}) and (s, same); rerun ablation_train")


def budget_of(cfg: AblationConfig, rep: ReplicateInputs) -> Budget:
    return Budget(len(rep.features), rep.subset_ratio, cfg.full_epochs, cfg.rs_budget, cfg.rs_fraction)


def train_needed(params: Params, ctx: StageContext, reps: list[ReplicateInputs],
                 plans: dict[int, GridPlan]) -> dict[int, pd.DataFrame]:
    """Fully train (or reuse) every network the plans need, all replicates
    in one fan-out; per replicate a frame of index, val_acc, test_acc."""
    space = ablation_space(params, ctx)
    data = full_data(ctx)
    jobs = replicate_jobs(reps, lambda rep: rep.meta["index"].to_numpy()[plans[rep.index].needed()],
                          lambda rep: data, space, spec_from_config(params.ablation, full=True), str(ctx.device),
                          ctx.out / "full", "full")
    ctx.log.log_metrics({"full_trained_now": len(pending(jobs)), "full_needed": len(jobs)})
    records = run_cached(jobs, full_job, architecture_map(params, ctx, "full training"))
    frames = {}
    for index, recs in by_replicate(jobs, records).items():
        frames[index] = pd.DataFrame([{k: r[k] for k in ("index", "val_acc", "test_acc", "seconds")} for r in recs])
    all_full = pd.concat([f.assign(replicate=i) for i, f in frames.items()], ignore_index=True)
    report.write_csv(all_full, ctx.out / "full.csv")
    return frames


def full_array(full: pd.DataFrame, meta: pd.DataFrame, column: str) -> np.ndarray:
    """(s,) per sampled row, NaN where the network was not fully trained."""
    return meta["index"].map(full.set_index("index")[column]).to_numpy(dtype=np.float64)


def score_replicate(ctx: StageContext, rep: ReplicateInputs, plan: GridPlan, full: pd.DataFrame) -> pd.DataFrame:
    """The replicate's rows, also logged to its own nested MLflow run."""
    val, test = (full_array(full, rep.meta, c) for c in ("val_acc", "test_acc"))
    frame = report.rows_frame(score_grid(plan, rep.es_acc, val, test)).assign(replicate=rep.index)
    child = ctx.log.child(f"replicate-{rep.index}", tags={"nasflow.replicate": str(rep.index),
                                                          "nasflow.dataset": ctx.data_info.name})
    try:
        child.log_params({"replicate": rep.index, "seed": rep.seed, "subset_ratio": rep.subset_ratio,
                          "num_archs": len(rep.features)})
        child.log_metrics(cell_metrics(frame))
        child.log_text(frame.to_csv(index=False, float_format="%.6g"), "rows.csv")
    except BaseException:
        child.end("FAILED")
        raise
    child.end("FINISHED")
    return frame


def cell_name(rule: str, eta: int, k: int) -> str:
    return f"{'rs' if rule == 'random' else 'dcnas'}.eta{eta}.k{k}"


def cell_metrics(frame: pd.DataFrame) -> dict[str, float]:
    out = {}
    for row in frame.itertuples():
        for column in ("test_acc", "regret", "budget", "tau_global", "tau_within"):
            value = getattr(row, column, float("nan"))
            if pd.notna(value):
                out[f"{cell_name(row.rule, row.eta, row.k)}.{column}"] = float(value)
    return out


def write_reports(ctx: StageContext, params: Params, rep0: ReplicateInputs, plan0: GridPlan, full0: pd.DataFrame,
                  rows: pd.DataFrame, summary: pd.DataFrame, comps: pd.DataFrame) -> str:
    cfg = params.ablation
    for name, frame in (("rows.csv", rows), ("summary.csv", summary), ("comparisons.csv", comps)):
        report.write_csv(frame, ctx.out / name)
    sections = {"Setup": setup_text(ctx, cfg, rows),
                "Verdict": verdict_text(cfg, comps),
                "Top-1 test accuracy (%) of the chosen architecture, mean ± 95 % CI (Table 1 layout)":
                    report.summary_table(summary, cfg.eta_list, cfg.k_list, "test_acc", "Top-1 acc(%)"),
                "Budget of each row (full trainings on D)": report.budget_table(summary, cfg.eta_list, cfg.k_list),
                "Paired comparisons (per replicate, Wilcoxon signed-rank)": report.comparison_table(comps)}
    if cfg.ground_truth:
        sections["Regret (percentage points below the best of the s sampled networks), mean ± 95 % CI"] = \
            report.summary_table(summary, cfg.eta_list, cfg.k_list, "regret", "Regret")
        sections["Kendall τ between early-stopping and final test accuracy, mean ± 95 % CI"] = \
            report.tau_summary_table(summary, cfg.eta_list, cfg.k_list)
    sections.update(table2_section(ctx, cfg, rep0, plan0, full0, rows))
    text = report.write_markdown(ctx.out / "report.md", sections)
    write_plots(ctx, cfg, summary)
    for name in ("report.md", "rows.csv", "summary.csv", "comparisons.csv", "table2.csv", "full.csv"):
        ctx.log.log_artifact(ctx.out / name, "ablation_grid")
    return text


def write_plots(ctx: StageContext, cfg: AblationConfig, summary: pd.DataFrame) -> None:
    metrics = ctx.root / "metrics"
    report.write_csv(summary, metrics / "ablation_table1.csv")
    log_figure_file(ctx.log, report.curves_figure(summary, cfg.eta_list, "test_acc", "test accuracy (%)"), metrics,
                    "ablation_accuracy.png")
    if cfg.ground_truth:
        regret = report.curves_figure(summary, cfg.eta_list, "regret", "regret (pp)")
        tau = report.tau_figure(summary, cfg.eta_list, cfg.k_list)
    else:  # the DVC plots exist either way
        regret = tau = report.note_figure("ablation.ground_truth is false: regret and Kendall τ need every "
                                          "sampled network fully trained")
    log_figure_file(ctx.log, regret, metrics, "ablation_regret.png")
    log_figure_file(ctx.log, tau, metrics, "ablation_tau.png")


def setup_text(ctx: StageContext, cfg: AblationConfig, rows: pd.DataFrame) -> str:
    ratio = rows[rows.rule == "dcnas"]
    return (f"Dataset `{ctx.data_info.name}`, preset `{cfg.preset}`, {cfg.repeats} replicate(s) (new sampled set, "
            f"D~ and training seeds each); s = {cfg.num_archs} networks per replicate trained {cfg.epochs} epochs on "
            f"D~ = {cfg.subset_fraction:g} of D, full training {cfg.full_epochs} epochs on D; "
            f"η ∈ {cfg.eta_list}, K ∈ {cfg.k_list}; random search: `{cfg.rs_budget}` budget, "
            f"{cfg.rs_repeats} draws "
            f"per replicate; {'every network fully trained (regret, τ)' if cfg.ground_truth else 'picks only'}. "
            f"{len(ratio)} DC-NAS cell results. CIs: Student t over replicates; "
            f"tests: two-sided Wilcoxon signed-rank, ties split. With R = {cfg.repeats} the smallest attainable "
            f"p is {min_p(cfg.repeats):.3g}.\n")


def min_p(repeats: int) -> float:
    """Smallest two-sided Wilcoxon p with ``repeats`` pairs, no ties."""
    return min(1.0, 2.0 / 2 ** repeats)


def verdict_text(cfg: AblationConfig, comps: pd.DataFrame, alpha: float = 0.05) -> str:
    """One plain line per comparison at the Table-2 K (and K = 1 vs RS)."""
    if comps.empty:
        return "No paired comparison (the grid has one cell).\n"
    k = table2_k(cfg.k_list)
    lines = []
    for r in comps[(comps.k == k) | ((comps.k == 1) & (comps.against == "random"))].itertuples():
        who = "global early stopping" if r.against == "global_es" else "equal-compute random search"
        if r.p_value < alpha:
            word = "beat" if r.diff > 0 else "lost to"
        else:
            word = "did not differ significantly from"
        lines.append(f"- η = {r.eta}, K = {r.k}: DC-NAS {word} {who} ({r.diff * 100:+.2f} pp, "
                     f"p = {r.p_value:.3g}, {r.wins} wins / {r.losses} losses of {r.n}).")
    return "\n".join(lines) + "\n"


def table2_k(k_list: list[int]) -> int:
    """The paper's headline K = 5 (Table 2), else the largest K of the grid."""
    return TABLE2_K if TABLE2_K in k_list else max(k_list)


def table2_section(ctx: StageContext, cfg: AblationConfig, rep: ReplicateInputs, plan: GridPlan,
                   full: pd.DataFrame, rows: pd.DataFrame) -> dict[str, str]:
    """Table 2 (the per-cluster picks) of replicate 0 at the largest η."""
    eta, k = max(cfg.eta_list), table2_k(cfg.k_list)
    cell = next(c for c in plan.cells if c.eta == eta and c.k == k)
    val, test = (full_array(full, rep.meta, c) for c in ("val_acc", "test_acc"))
    picks = report.table2(cell, rep.meta, rep.es_acc, val, test)
    report.write_csv(picks, ctx.out / "table2.csv")
    mine = rows[(rows.replicate == rep.index) & (rows.rule == "dcnas") & (rows.eta == eta) & (rows.k == k)]
    return {f"Per-cluster picks, replicate {rep.index}, K = {k}, η = {eta} (Table 2 layout)":
            report.table2_markdown(picks, eta, int(mine.chosen.iloc[0]))}


def summary_metrics(cfg: AblationConfig, summary: pd.DataFrame, comps: pd.DataFrame,
                    full_count: int) -> dict[str, float]:
    """Flat metrics for DVC and MLflow: every cell's mean test accuracy (and
    regret), its CI, the p-values, plus the headline comparison at the
    largest η: global early stopping (K = 1), DC-NAS and random search at
    the Table-2 K."""
    metrics: dict[str, float] = {"full_trained": full_count, "replicates": cfg.repeats}
    for row in summary.itertuples():
        name = cell_name(row.rule, row.eta, row.k)
        for column in ("test_acc", "test_acc_ci", "regret", "budget"):
            value = getattr(row, column, float("nan"))
            if pd.notna(value):
                metrics[f"{name}.{column}"] = value
    for r in comps.itertuples():
        metrics[f"dcnas.eta{r.eta}.k{r.k}.vs_{r.against}.diff"] = r.diff
        metrics[f"dcnas.eta{r.eta}.k{r.k}.vs_{r.against}.p_value"] = r.p_value
    eta, k = max(cfg.eta_list), table2_k(cfg.k_list)
    pick = lambda rule, kk: summary[(summary.rule == rule) & (summary.eta == eta) & (summary.k == kk)]  # noqa: E731
    if 1 in cfg.k_list:
        metrics["global_es.test_acc"] = float(pick("dcnas", 1).test_acc.iloc[0])
    metrics["dcnas.test_acc"] = float(pick("dcnas", k).test_acc.iloc[0])
    metrics["rs.test_acc"] = float(pick("random", k).test_acc.iloc[0])
    if cfg.ground_truth:
        metrics["tau_global"] = float(pick("dcnas", k).tau_global.iloc[0])
    return {name: float(value) for name, value in metrics.items()}
