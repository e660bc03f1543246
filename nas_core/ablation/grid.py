"""The Table-1 grid (dc-nas.md §4.1): selection rules K × η against random
search, and, with every sampled network fully trained, their regret and the
Kendall τ between early-stopping and final accuracy.

Work is split in two so that nothing is trained twice: ``plan_grid`` decides
which networks every rule would fully train (the K per-cluster picks of each
cell, the random-search draws, or all of them in ground-truth mode);
the caller trains the union once; ``score_grid`` then reads the results.

Rules
* DC-NAS cell (η, K): k-means (Eq. 5) on the features of the first η epochs,
  features[:, :, :η]; in each cluster the network with the best
  early-stopping validation accuracy at epoch η (Eq. 8); the K picks are
  fully trained on D and the one with the best validation accuracy wins
  (Eq. 10); its test accuracy is reported. K = 1 is one cluster by
  definition (k-means is not run), i.e. plain global early stopping.
* Random search for (η, K), at equal compute (:class:`Budget`): the DC-NAS
  cell spent s · σ · η / E_full full-training equivalents on early stopping
  (s networks, η epochs on D~ = σ · D, against E_full epochs on D) plus K
  full trainings, so random search fully trains ``floor(s σ η / E_full) + K``
  distinct networks drawn uniformly, best by validation, repeated
  ``rs_repeats`` times: mean ± std of the test accuracy. With the paper's
  settings (s = 15,625, σ = 10 %, η = 20 of 200 epochs) this is its 156 + K.
  The paper's fixed fraction (``int(fraction · s) + K`` for every η) is the
  ``fraction`` mode. The budget is capped at s. The draws come from the s
  sampled networks, themselves a uniform sample of the space, so random
  search shares the full-training cache (a choice: the paper draws from the
  whole space).
* Regret (ground truth only) = best test accuracy among the s networks −
  test accuracy of the chosen one.
* Budget: every row states what it spent in full-training equivalents
  (DC-NAS: s σ η / E_full + K; random search: its number of networks).
* Kendall τ (scipy.stats.kendalltau, τ-b) between early-stopping accuracy at
  η and final test accuracy, over all s networks and inside each cluster
  (mean over clusters with at least 3 members and a defined τ).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.stats import kendalltau

from nas_core.dcnas.cluster import cluster_features
from nas_core.dcnas.select import best_per_cluster, final_choice

MIN_CLUSTER_FOR_TAU = 3


@dataclass
class Cell:
    """One DC-NAS selection: cluster labels (s,) and the per-cluster picks."""

    eta: int
    k: int
    labels: np.ndarray
    picks: np.ndarray


def early_stopping_cost(num_archs: int, subset_ratio: float, eta: int, full_epochs: int) -> float:
    """Early training of s networks for η epochs on D~ = σ · D, in full
    trainings (E_full epochs on D): s · σ · η / E_full."""
    return num_archs * subset_ratio * eta / full_epochs


def rs_budget(num_archs: int, k: int, subset_ratio: float, eta: int, full_epochs: int) -> int:
    """Equal-compute random search: floor(s σ η / E_full) + K networks."""
    return int(np.floor(early_stopping_cost(num_archs, subset_ratio, eta, full_epochs) + 1e-9)) + k


def rs_budget_fraction(num_archs: int, k: int, fraction: float) -> int:
    """The paper's fixed fraction: int(fraction · s) + K networks."""
    return int(fraction * num_archs) + k


@dataclass(frozen=True)
class Budget:
    """What each rule may spend, in full-training equivalents. ``subset_ratio``
    is σ = |D~| / |D| as actually used; ``mode`` picks the random-search
    budget: ``equal_compute`` (per η) or ``fraction`` (the paper's 1 %)."""

    num_archs: int
    subset_ratio: float
    full_epochs: int
    mode: Literal["equal_compute", "fraction"] = "equal_compute"
    fraction: float = 0.01

    def dcnas(self, eta: int, k: int) -> float:
        return early_stopping_cost(self.num_archs, self.subset_ratio, eta, self.full_epochs) + k

    def random(self, eta: int, k: int) -> int:
        if self.mode == "fraction":
            n = rs_budget_fraction(self.num_archs, k, self.fraction)
        else:
            n = rs_budget(self.num_archs, k, self.subset_ratio, eta, self.full_epochs)
        return min(n, self.num_archs)


@dataclass
class GridPlan:
    cells: list[Cell]
    rs_draws: dict[tuple[int, int], list[np.ndarray]]
    ground_truth: bool
    num_archs: int
    budget: Budget

    def needed(self) -> list[int]:
        """Rows (0..s-1) that must be fully trained, each once."""
        if self.ground_truth:
            return list(range(self.num_archs))
        rows = {int(i) for c in self.cells for i in c.picks}
        rows |= {int(i) for draws in self.rs_draws.values() for d in draws for i in d}
        return sorted(rows)


def select_cell(features: np.ndarray, es_acc: np.ndarray, eta: int, k: int, seed: int) -> Cell:
    """Eq. 5 + Eq. 8 for one (η, K). ``features`` (s, L, η_max), ``es_acc``
    (s, η_max) early-stopping validation accuracy per epoch."""
    if not 1 <= eta <= features.shape[2] or not 1 <= k <= len(features):
        raise ValueError(f"cell eta={eta}, K={k} outside eta 1..{features.shape[2]}, K 1..{len(features)}")
    if k == 1:
        labels = np.zeros(len(features), dtype=int)
    else:
        labels = np.asarray(cluster_features(features[:, :, :eta], k, seed).labels)
    picks = np.asarray(best_per_cluster(labels, es_acc[:, eta - 1]), dtype=int)
    return Cell(eta, k, labels, picks)


def draw_random_search(num_archs: int, budget: int, repeats: int, seed: int) -> list[np.ndarray]:
    """``repeats`` draws of ``budget`` distinct rows each."""
    if not 1 <= budget <= num_archs:
        raise ValueError(f"random-search budget {budget} must be in 1..{num_archs} (the sampled networks)")
    rng = np.random.default_rng(seed)
    return [np.sort(rng.choice(num_archs, size=budget, replace=False)) for _ in range(repeats)]


def plan_grid(features: np.ndarray, es_acc: np.ndarray, eta_list: list[int], k_list: list[int],
              budget: Budget, rs_repeats: int, ground_truth: bool, seed: int) -> GridPlan:
    """The DC-NAS cells and, per (η, K), the random-search draws of
    ``budget.random(η, K)`` networks (the same seed for every η, so equal
    budgets draw the same networks)."""
    s = len(features)
    if budget.num_archs != s:
        raise ValueError(f"budget for {budget.num_archs} networks, features for {s}")
    cells = [select_cell(features, es_acc, eta, k, seed) for eta in eta_list for k in k_list]
    rs = {(eta, k): draw_random_search(s, budget.random(eta, k), rs_repeats, seed + 7919 * k)
          for eta in eta_list for k in k_list}
    return GridPlan(cells, rs, ground_truth, s, budget)


def choose(rows: np.ndarray, full_val: np.ndarray) -> int:
    """Eq. 10 among ``rows``: the row with the best full-training val acc."""
    values = full_val[rows]
    if np.isnan(values).any():
        raise ValueError(f"full-training result missing for rows {rows[np.isnan(values)].tolist()}")
    return int(rows[final_choice(values)])


def tau(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: tau is nan, reported as such
        return float(kendalltau(x, y).statistic)


def within_cluster_tau(labels: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    taus = [tau(x[labels == c], y[labels == c]) for c in np.unique(labels)
            if (labels == c).sum() >= MIN_CLUSTER_FOR_TAU]
    taus = [t for t in taus if np.isfinite(t)]
    return float(np.mean(taus)) if taus else float("nan")


def score_cell(cell: Cell, es_acc: np.ndarray, full_val: np.ndarray, full_test: np.ndarray,
               ground_truth: bool, budget: Budget) -> dict:
    chosen = choose(cell.picks, full_val)
    row = {"rule": "dcnas", "eta": cell.eta, "k": cell.k, "budget": budget.dcnas(cell.eta, cell.k),
           "chosen": chosen, "trained": len(cell.picks),
           "test_acc": float(full_test[chosen]), "test_std": 0.0, "val_acc": float(full_val[chosen]),
           "es_acc": float(es_acc[chosen, cell.eta - 1])}
    if ground_truth:
        es = es_acc[:, cell.eta - 1]
        row["regret"] = float(np.max(full_test) - full_test[chosen])
        row["tau_global"] = tau(es, full_test)
        row["tau_within"] = within_cluster_tau(cell.labels, es, full_test)
    return row


def score_random_search(eta: int, k: int, draws: list[np.ndarray], full_val: np.ndarray, full_test: np.ndarray,
                        ground_truth: bool) -> dict:
    accs = np.array([full_test[choose(d, full_val)] for d in draws])
    row = {"rule": "random", "eta": eta, "k": k, "budget": float(len(draws[0])), "chosen": -1,
           "trained": len(draws[0]),
           "test_acc": float(accs.mean()), "test_std": float(accs.std()), "val_acc": float("nan"),
           "es_acc": float("nan")}
    if ground_truth:
        row["regret"] = float(np.max(full_test) - accs.mean())
    return row


def score_grid(plan: GridPlan, es_acc: np.ndarray, full_val: np.ndarray, full_test: np.ndarray) -> list[dict]:
    """One row per DC-NAS cell and per random-search (η, K). ``full_val`` and
    ``full_test`` are (s,) arrays, NaN where a network was not trained."""
    rows = [score_random_search(eta, k, d, full_val, full_test, plan.ground_truth)
            for (eta, k), d in plan.rs_draws.items()]
    rows += [score_cell(c, es_acc, full_val, full_test, plan.ground_truth, plan.budget) for c in plan.cells]
    return rows
