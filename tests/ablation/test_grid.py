"""The Table-1 grid on synthetic features and accuracies: K=1 is global
early stopping, DC-NAS picks the best of each cluster, random search
spends exactly its equal-compute budget, regret and Kendall τ."""
from __future__ import annotations

import numpy as np
import pytest

from nas_core.ablation.grid import (
    Budget,
    draw_random_search,
    plan_grid,
    rs_budget,
    rs_budget_fraction,
    score_grid,
    select_cell,
    within_cluster_tau,
)

S, L, ETA = 40, 6, 4


def budget(fraction: float = 0.05, mode: str = "fraction", ratio: float = 0.5, full_epochs: int = 10) -> Budget:
    return Budget(S, ratio, full_epochs, mode, fraction)


@pytest.mark.parametrize("s, sigma, eta, epochs, expected", [
    (15625, 0.1, 20, 200, 156),   # the paper's 156 + K (10 % of the data, 10 % of the epochs)
    (60, 0.5, 6, 10, 18),         # the old digits defaults: 18 + K, not the 1 % rule's 0 + K
    (40, 0.1, 4, 30, 0),          # the paper preset on digits: early stopping costs half a training
    (100, 0.25, 3, 12, 6),
])
def test_rs_budget_is_the_equal_compute_formula(s, sigma, eta, epochs, expected):
    for k in (1, 3, 10):
        assert rs_budget(s, k, sigma, eta, epochs) == int(np.floor(s * sigma * eta / epochs + 1e-9)) + k
        assert rs_budget(s, k, sigma, eta, epochs) == expected + k
    assert rs_budget_fraction(15625, 5, 0.01) == 156 + 5
    spent = Budget(s, sigma, epochs).dcnas(eta, 5)
    assert spent == pytest.approx(s * sigma * eta / epochs + 5)  # the DC-NAS row's full-training equivalents
    assert Budget(s, sigma, epochs).random(eta, 5) == min(s, expected + 5)


def test_equal_compute_budget_grows_with_eta_and_is_capped_at_s(synthetic):
    features, es_acc, val, final = synthetic
    plan = plan_grid(features, es_acc, [2, 4], [1, 3], budget(mode="equal_compute", ratio=0.5, full_epochs=4),
                     2, False, seed=0)
    sizes = {key: len(draws[0]) for key, draws in plan.rs_draws.items()}
    assert sizes == {(2, 1): 11, (2, 3): 13, (4, 1): 21, (4, 3): 23}
    rows = score_grid(plan, es_acc, val, final)
    for row in rows:
        expected = 40 * 0.5 * row["eta"] / 4 + row["k"] if row["rule"] == "dcnas" else sizes[(row["eta"], row["k"])]
        assert row["budget"] == pytest.approx(expected)
    capped = Budget(S, 1.0, 2).random(2, 3)
    assert capped == S


@pytest.fixture(scope="module")
def synthetic():
    """Two convergence families: "fast" networks (features drop little,
    high early accuracy, low final accuracy) and "slow" ones (the reverse)."""
    rng = np.random.default_rng(0)
    slow = np.arange(S) % 2 == 1
    decay = np.where(slow, 0.15, 0.02)[:, None, None] * np.arange(ETA)[None, None, :]
    features = 1.0 - decay - rng.uniform(0, 0.01, size=(S, L, ETA))
    features[:, :, 0] = 1.0
    es_acc = np.where(slow[:, None], 0.5, 0.8) + rng.uniform(0, 0.1, size=(S, ETA))
    final = np.where(slow, 0.95, 0.85) + rng.uniform(0, 0.03, size=S)
    val = final + rng.normal(0, 0.002, size=S)
    return features, es_acc, val, final


def test_k1_row_is_plain_global_early_stopping(synthetic):
    features, es_acc, val, final = synthetic
    plan = plan_grid(features, es_acc, [2, 4], [1, 3], budget(), 4, True, seed=0)
    rows = score_grid(plan, es_acc, val, final)
    for eta in (2, 4):
        row = next(r for r in rows if r["rule"] == "dcnas" and r["eta"] == eta and r["k"] == 1)
        independent = int(np.argmax(es_acc[:, eta - 1]))
        assert row["chosen"] == independent and row["trained"] == 1
        assert row["test_acc"] == pytest.approx(final[independent])
        assert row["regret"] == pytest.approx(final.max() - final[independent])


def test_clusters_rescue_slow_converging_networks(synthetic):
    features, es_acc, val, final = synthetic
    plan = plan_grid(features, es_acc, [4], [1, 2], budget(0.0), 1, True, seed=0)
    rows = {r["k"]: r for r in score_grid(plan, es_acc, val, final) if r["rule"] == "dcnas"}
    assert rows[1]["chosen"] % 2 == 0  # global early stopping picks a fast (worse) network
    assert rows[2]["chosen"] % 2 == 1  # one cluster per family: the slow family's best wins Eq. 10
    assert rows[2]["regret"] < rows[1]["regret"]


def test_each_pick_is_the_early_stopping_best_of_its_cluster(synthetic):
    features, es_acc, _, _ = synthetic
    cell = select_cell(features, es_acc, eta=3, k=4, seed=1)
    assert len(cell.picks) == 4 and set(np.unique(cell.labels)) == {0, 1, 2, 3}
    for cluster, pick in enumerate(cell.picks):
        members = np.flatnonzero(cell.labels == cluster)
        assert pick in members and es_acc[pick, 2] == es_acc[members, 2].max()


def test_random_search_spends_exactly_its_budget(synthetic):
    features, es_acc, val, final = synthetic
    fraction, repeats = 0.05, 6
    plan = plan_grid(features, es_acc, [4], [1, 3, 5], budget(fraction), repeats, ground_truth=False, seed=0)
    for (_, k), draws in plan.rs_draws.items():
        size = rs_budget_fraction(S, k, fraction)
        assert size == int(0.05 * S) + k
        assert len(draws) == repeats
        assert all(len(d) == size == len(set(d.tolist())) for d in draws)
    needed = plan.needed()
    # Only the planned networks are fully trained: everything else is unknown (NaN) and still scores.
    val_known, test_known = np.full(S, np.nan), np.full(S, np.nan)
    val_known[needed], test_known[needed] = val[needed], final[needed]
    rows = score_grid(plan, es_acc, val_known, test_known)
    rs = {r["k"]: r for r in rows if r["rule"] == "random"}
    for (_, k), draws in plan.rs_draws.items():
        assert rs[k]["trained"] == rs_budget_fraction(S, k, fraction)
        best = [final[d[np.argmax(val[d])]] for d in draws]
        assert rs[k]["test_acc"] == pytest.approx(np.mean(best)) and rs[k]["test_std"] == pytest.approx(np.std(best))


def test_ground_truth_trains_everything_and_missing_results_are_named(synthetic):
    features, es_acc, val, final = synthetic
    plan = plan_grid(features, es_acc, [2], [3], budget(0.0), 2, True, seed=0)
    assert plan.needed() == list(range(S))
    holes = val.copy()
    holes[plan.cells[0].picks[0]] = np.nan
    with pytest.raises(ValueError, match="missing for rows"):
        score_grid(plan, es_acc, holes, final)


def test_random_search_budget_is_checked():
    with pytest.raises(ValueError, match="budget 11"):
        draw_random_search(10, 11, 1, 0)


def test_kendall_tau_within_clusters():
    labels = np.array([0, 0, 0, 1, 1, 1, 2])
    x = np.array([1, 2, 3, 1, 2, 3, 5.0])
    y = np.array([1, 2, 3, 3, 2, 1, 0.0])  # cluster 0 agrees, cluster 1 reversed, cluster 2 too small
    assert within_cluster_tau(labels, x, y) == pytest.approx(0.0)
    assert within_cluster_tau(labels, x, x) == pytest.approx(1.0)
