"""Tables and figures of the ablation in the paper's layouts.

* Table 1 (dc-nas.md §4.1): rows "Top-1 acc(%) (RS)" and one per η, columns
  K; random search shows mean ± std over its repeats.
* The same layout for regret (ground-truth mode) and a τ table (global and
  mean within-cluster Kendall τ per cell).
* Table 2: the per-cluster picks of one cell (ratios, params, FLOPs,
  accuracy), sorted by params as in the paper.
* A heatmap of the test accuracy over η × K with the random-search row.
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
    hit = frame[(frame.rule == rule) & (frame.eta == eta) & (frame.k == k)]
    return None if hit.empty else hit.iloc[0]


def _markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines) + "\n"


def grid_table(frame: pd.DataFrame, eta_list: Sequence[int], k_list: Sequence[int], column: str,
               label: str, scale: float = 100.0, digits: int = 2) -> str:
    """Table-1 layout for one column of the rows (``test_acc``, ``regret``)."""
    def fmt(row: pd.Series | None, with_std: bool) -> str:
        if row is None or column not in row or pd.isna(row[column]):
            return "-"
        text = f"{row[column] * scale:.{digits}f}"
        return f"{text} ± {row['test_std'] * scale:.{digits}f}" if with_std and column == "test_acc" else text

    body = [[f"{label} (RS)"] + [fmt(_cell(frame, "random", 0, k), True) for k in k_list]]
    body += [[f"{label} (η = {eta})"] + [fmt(_cell(frame, "dcnas", eta, k), False) for k in k_list]
             for eta in eta_list]
    return _markdown(["DC-NAS"] + [f"K = {k}" for k in k_list], body)


def tau_table(frame: pd.DataFrame, eta_list: Sequence[int], k_list: Sequence[int]) -> str:
    """Global τ per η and mean within-cluster τ per (η, K)."""
    body = []
    for eta in eta_list:
        cells = [_cell(frame, "dcnas", eta, k) for k in k_list]
        glob = next((c["tau_global"] for c in cells if c is not None), float("nan"))
        body.append([f"η = {eta}", f"{glob:.3f}"] + [f"{c['tau_within']:.3f}" if c is not None else "-"
                                                     for c in cells])
    return _markdown(["Kendall τ", "global"] + [f"within, K = {k}" for k in k_list], body)


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


def heatmap(frame: pd.DataFrame, eta_list: Sequence[int], k_list: Sequence[int]):
    """Test accuracy (%) over rows RS, η... and columns K."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["RS"] + [f"η={e}" for e in eta_list]
    keys = [("random", 0)] + [("dcnas", e) for e in eta_list]
    grid = np.array([[np.nan if (c := _cell(frame, rule, eta, k)) is None else c["test_acc"] * 100
                      for k in k_list] for rule, eta in keys])
    fig, ax = plt.subplots(figsize=(1.2 * len(k_list) + 2, 0.6 * len(labels) + 1.5))
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    for (i, j), value in np.ndenumerate(grid):
        if np.isfinite(value):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="w", fontsize=8)
    ax.set_xticks(range(len(k_list)), [f"K={k}" for k in k_list])
    ax.set_yticks(range(len(labels)), labels)
    ax.set_title("Test accuracy (%) of the chosen architecture")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return fig


def save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip("."), dpi=120)
    plt.close(fig)


def write_markdown(path: Path, sections: dict[str, str]) -> str:
    text = "\n".join(f"## {title}\n\n{body}" for title, body in sections.items())
    write_text(path, text)
    return text
