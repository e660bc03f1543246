"""Tables and figures of the study in the paper's layouts.

* Table 1 (dc-nas.md §4.1) over replicates: per η a DC-NAS row and the
  random-search row at the same budget, columns K, each cell mean ± 95 % CI
  half-width (nas_core/ablation/stats.py); the same for regret
  (ground-truth mode); the budget of every row in full-training
  equivalents; the paired comparisons (mean difference ± CI, wins/losses,
  Wilcoxon p); Kendall τ global and within clusters with CIs.
* Table 2: the per-cluster picks of one cell (ratios, params, FLOPs,
  accuracy), sorted by params as in the paper.
* Figures: accuracy and regret vs K per η with CI bands (random search
  dashed), τ bars with CI whiskers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from nas_core.ablation.grid import Cell
from nas_core.io import atomic_path, write_text


def rows_frame(rows: Sequence[dict]) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")


def _cell(frame: pd.DataFrame, rule: str, eta: int, k: int) -> pd.Series | None:
    """The row of ``frame`` for one (rule, η, K), or None."""
    hit = frame[(frame.rule == rule) & (frame.eta == eta) & (frame.k == k)]
    return None if hit.empty else hit.iloc[0]


def _markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines) + "\n"


def table2(cell: Cell, meta: pd.DataFrame, es_acc: np.ndarray, full_val: np.ndarray,
           full_test: np.ndarray) -> pd.DataFrame:
    """The picks of one cell; ``meta`` has per-row ``ratios``, ``params``,
    ``flops``. Sorted by params (the paper's Table 2)."""
    picks = []
    for cluster, row in enumerate(cell.picks):
        picks.append({"network": f"N{cluster + 1}", "cluster_size": int((cell.labels == cluster).sum()),
                      "row": int(row), "ratios": ", ".join(f"{r:g}" for r in meta.ratios[row]),
                      "params": int(meta.params[row]), "flops": int(meta.flops[row]),
                      "es_acc": float(es_acc[row, cell.eta - 1]), "val_acc": float(full_val[row]),
                      "test_acc": float(full_test[row])})
    return pd.DataFrame(picks).sort_values("params", kind="stable").reset_index(drop=True)


def table2_markdown(picks: pd.DataFrame, eta: int, chosen_row: int) -> str:
    body = [[r.network + (" (N*)" if r.row == chosen_row else ""), r.ratios, str(r.cluster_size),
             f"{r.params / 1e3:.1f}K", f"{r.flops / 1e6:.3f}M", f"{r.es_acc * 100:.2f}",
             f"{r.val_acc * 100:.2f}", f"{r.test_acc * 100:.2f}"] for r in picks.itertuples()]
    header = ["Network", "Channel Ratio", "Cluster size", "Param", "FLOPs", f"ES acc(%) (η = {eta})",
              "Val acc(%)", "Test acc(%)"]
    return _markdown(header, body)


def save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip("."), dpi=120)
    plt.close(fig)


def write_markdown(path: Path, sections: dict[str, str]) -> str:
    text = "\n".join(f"## {title}\n\n{body}" for title, body in sections.items())
    write_text(path, text)
    return text


def _pm(row: pd.Series | None, column: str, scale: float, digits: int) -> str:
    """``mean ± half-width`` (or the mean alone without an interval)."""
    if row is None or column not in row or pd.isna(row[column]):
        return "-"
    text = f"{row[column] * scale:.{digits}f}"
    half = row.get(f"{column}_ci", float("nan"))
    return text if pd.isna(half) else f"{text} ± {half * scale:.{digits}f}"


def summary_table(summary: pd.DataFrame, eta_list: Sequence[int], k_list: Sequence[int], column: str,
                  label: str, scale: float = 100.0, digits: int = 2) -> str:
    """Table-1 layout over replicates: per η the DC-NAS row and the
    random-search row at the same budget; cells mean ± 95 % CI."""
    body = []
    for eta in eta_list:
        body.append([f"{label} DC-NAS (η = {eta})"] + [_pm(_cell(summary, "dcnas", eta, k), column, scale, digits)
                                                       for k in k_list])
        body.append([f"{label} RS (budget of η = {eta})"] + [_pm(_cell(summary, "random", eta, k), column, scale,
                                                                  digits) for k in k_list])
    return _markdown(["Rule"] + [f"K = {k}" for k in k_list], body)


def budget_table(summary: pd.DataFrame, eta_list: Sequence[int], k_list: Sequence[int]) -> str:
    """What each row spent, in full trainings on D (mean over replicates)."""
    def fmt(row: pd.Series | None) -> str:
        return "-" if row is None else f"{row['budget']:.2f}"

    body = []
    for eta in eta_list:
        body.append([f"DC-NAS (η = {eta})"] + [fmt(_cell(summary, "dcnas", eta, k)) for k in k_list])
        body.append([f"RS (budget of η = {eta})"] + [fmt(_cell(summary, "random", eta, k)) for k in k_list])
    return _markdown(["Full-training equivalents"] + [f"K = {k}" for k in k_list], body)


def comparison_table(comps: pd.DataFrame) -> str:
    """Paired differences of each DC-NAS cell against global early stopping
    and random search (percentage points), with the Wilcoxon p-value."""
    names = {"global_es": "global early stopping (K = 1)", "random": "random search, same budget"}
    body = []
    for r in comps.itertuples():
        diff = f"{r.diff * 100:+.2f}" + ("" if pd.isna(r.diff_ci) else f" ± {r.diff_ci * 100:.2f}")
        ties = r.n - r.wins - r.losses
        body.append([f"η = {r.eta}, K = {r.k}", names[r.against], diff, f"{r.wins}/{r.losses}/{ties}",
                     f"{r.p_value:.3g}"])
    return _markdown(["DC-NAS cell", "against", "test acc difference (pp, mean ± 95 % CI)", "wins/losses/ties",
                      "Wilcoxon p"], body)


def tau_summary_table(summary: pd.DataFrame, eta_list: Sequence[int], k_list: Sequence[int]) -> str:
    """Kendall τ (early-stopping vs final test accuracy): over all s networks
    and the mean within clusters, mean ± 95 % CI over replicates."""
    body = []
    for eta in eta_list:
        cells = [_cell(summary, "dcnas", eta, k) for k in k_list]
        first = next((c for c in cells if c is not None), None)
        body.append([f"η = {eta}", _pm(first, "tau_global", 1.0, 3)]
                    + [_pm(c, "tau_within", 1.0, 3) for c in cells])
    return _markdown(["Kendall τ", "global"] + [f"within, K = {k}" for k in k_list], body)


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _band(ax, x, frame: pd.DataFrame, column: str, scale: float, **style) -> None:
    mean = frame[column].to_numpy() * scale
    half = np.nan_to_num(frame[f"{column}_ci"].to_numpy() * scale)
    line, = ax.plot(x, mean, marker="o", **style)
    ax.fill_between(x, mean - half, mean + half, color=line.get_color(), alpha=0.2)


def curves_figure(summary: pd.DataFrame, eta_list: Sequence[int], column: str, ylabel: str):
    """``column`` (test_acc or regret, %) vs K, one panel per η: DC-NAS
    solid, random search at the same budget dashed, 95 % CI bands."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(eta_list), figsize=(3.2 * len(eta_list) + 1, 3.4), sharey=True, squeeze=False)
    for ax, eta in zip(axes[0], eta_list):
        for rule, style in (("dcnas", {"label": "DC-NAS"}), ("random", {"label": "random search", "ls": "--"})):
            part = summary[(summary.rule == rule) & (summary.eta == eta)].sort_values("k")
            if len(part) and column in part:
                _band(ax, part.k.to_numpy(), part, column, 100.0, **style)
        ks = sorted(summary[summary.eta == eta].k.unique())
        ax.set_xscale("log")
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.minorticks_off()
        ax.set_xlabel("K (clusters)")
        ax.set_title(f"η = {eta}")
    axes[0][0].set_ylabel(ylabel)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def tau_figure(summary: pd.DataFrame, eta_list: Sequence[int], k_list: Sequence[int]):
    """Bars of Kendall τ per η: global, and within clusters per K > 1, with
    95 % CI whiskers."""
    plt = _plt()
    groups = [("global", None)] + [(f"within K={k}", k) for k in k_list if k > 1]
    width = 0.8 / len(groups)
    fig, ax = plt.subplots(figsize=(1.6 * len(eta_list) + 3, 3.4))
    for g, (label, k) in enumerate(groups):
        means, halves = [], []
        for eta in eta_list:
            row = _cell(summary, "dcnas", eta, k or min(k_list))
            column = "tau_global" if k is None else "tau_within"
            means.append(np.nan if row is None else row[column])
            halves.append(np.nan if row is None else row[f"{column}_ci"])
        ax.bar(np.arange(len(eta_list)) + g * width, means, width, yerr=np.nan_to_num(halves), capsize=3, label=label)
    ax.set_xticks(np.arange(len(eta_list)) + 0.4 - width / 2, [f"η = {e}" for e in eta_list])
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylabel("Kendall τ (early stop vs final)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def note_figure(text: str):
    """A figure holding one line of text (a plot that has nothing to show)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=9)
    return fig
