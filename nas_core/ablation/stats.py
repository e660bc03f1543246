"""Statistics over the replicates of a study: per-cell mean ± 95 % CI,
paired comparisons between rules, Kendall τ with CIs.

Choices (the paper reports single runs and no test):

* Confidence intervals are Student-t intervals of the mean over the R
  replicates (``scipy.stats.t``): with R = 3 the half-width is 4.3 standard
  errors, so small studies give honest, wide intervals; with R = 1 there is
  no interval (NaN).
* A paired comparison of rule A against rule B uses, per replicate, A's and
  B's test accuracy on the same sampled set (random search: the mean over
  its ``rs_repeats`` draws, i.e. its expected result at that budget). The
  test is the two-sided Wilcoxon signed-rank test (``scipy.stats.wilcoxon``)
  with ``zero_method="zsplit"``: replicates where both rules chose equally
  well count as ties split between the signs, so identical rules give
  p = 1. The reported effect is the mean paired difference with its t
  interval. With R replicates the smallest attainable two-sided p is
  2 / 2^R (0.25 at R = 3, below 0.01 from R = 8): a study with few replicates
  cannot reach significance however large the effect; the report says so.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
KEYS = ["rule", "eta", "k"]


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """(mean, half-width of the t interval); NaNs are dropped, the
    half-width is NaN with fewer than 2 values."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return float("nan"), float("nan")
    if len(x) < 2:
        return float(x.mean()), float("nan")
    sem = x.std(ddof=1) / np.sqrt(len(x))
    return float(x.mean()), float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * sem)


def paired_test(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Wilcoxon signed-rank test of a - b (two-sided, zeros split), the
    mean difference and its CI half-width, and how often a beat b."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired test needs two equal-length 1-d samples, got {a.shape} and {b.shape}")
    diff = a - b
    mean, half = mean_ci(diff)
    if np.allclose(diff, 0.0, atol=1e-12):
        p = 1.0
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = float(stats.wilcoxon(a, b, zero_method="zsplit").pvalue)
    return {"diff": mean, "diff_ci": half, "p_value": p, "wins": int((diff > 1e-12).sum()),
            "losses": int((diff < -1e-12).sum()), "n": int(len(diff))}


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (rule, η, K): replicates, budget and mean ± CI half-width
    of every numeric column present (test_acc, regret, tau_global,
    tau_within)."""
    out = []
    for key, group in rows.groupby(KEYS, sort=True):
        row = dict(zip(KEYS, key), replicates=len(group), budget=float(group.budget.mean()))
        for column in ("test_acc", "regret", "tau_global", "tau_within"):
            if column in group:
                row[column], row[f"{column}_ci"] = mean_ci(group[column])
        out.append(row)
    return pd.DataFrame(out)


def _paired_values(rows: pd.DataFrame, rule: str, eta: int, k: int) -> pd.Series:
    hit = rows[(rows.rule == rule) & (rows.eta == eta) & (rows.k == k)]
    return hit.set_index("replicate")["test_acc"]


def comparisons(rows: pd.DataFrame) -> pd.DataFrame:
    """Every DC-NAS cell against global early stopping (K = 1, same η) and
    against random search at the same (η, K) budget, paired by replicate."""
    out = []
    cells = rows[rows.rule == "dcnas"][["eta", "k"]].drop_duplicates().sort_values(["eta", "k"])
    for eta, k in cells.itertuples(index=False):
        ours = _paired_values(rows, "dcnas", eta, k)
        for against, rule, other_k in (("global_es", "dcnas", 1), ("random", "random", k)):
            if against == "global_es" and k == 1:
                continue
            theirs = _paired_values(rows, rule, eta, other_k)
            common = ours.index.intersection(theirs.index)
            if len(common):
                test = paired_test(ours[common].to_numpy(), theirs[common].to_numpy())
                out.append({"eta": int(eta), "k": int(k), "against": against, **test})
    return pd.DataFrame(out)
