"""Statistics over replicates: the paired test says "no difference" for
identical rules and finds a 2-point shift over 30 replicates; intervals
and the comparison table line up with the grid's rows."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nas_core.ablation.stats import comparisons, mean_ci, paired_test, summarise


def test_identical_rules_give_p_one():
    acc = np.random.default_rng(0).uniform(0.85, 0.95, size=30)
    result = paired_test(acc, acc.copy())
    assert result["p_value"] == pytest.approx(1.0)
    assert result["diff"] == 0.0 and result["wins"] == result["losses"] == 0


def test_a_two_point_shift_over_30_replicates_is_significant():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.85, 0.95, size=30)
    shifted = base + 0.02 + rng.normal(0, 0.01, size=30)
    result = paired_test(shifted, base)
    assert result["p_value"] < 0.01
    assert result["diff"] == pytest.approx(0.02, abs=0.005) and result["diff_ci"] < 0.01
    assert paired_test(base, shifted)["diff"] < 0  # the sign follows the order of the rules


def test_three_replicates_cannot_reach_significance():
    assert paired_test([0.9, 0.91, 0.92], [0.8, 0.8, 0.8])["p_value"] == pytest.approx(0.25)


def test_mean_ci_is_a_t_interval():
    mean, half = mean_ci([0.9, 0.92, 0.94])
    assert mean == pytest.approx(0.92) and half == pytest.approx(4.303 * 0.02 / np.sqrt(3), rel=1e-3)
    assert np.isnan(mean_ci([0.9])[1]) and np.isnan(mean_ci([])[0])


def test_summary_and_comparisons_pair_by_replicate():
    rows = []
    for r in range(4):
        rows += [{"rule": "dcnas", "eta": 2, "k": 1, "replicate": r, "budget": 3.0, "test_acc": 0.90 + r / 100},
                 {"rule": "dcnas", "eta": 2, "k": 3, "replicate": r, "budget": 5.0, "test_acc": 0.93 + r / 100},
                 {"rule": "random", "eta": 2, "k": 3, "replicate": r, "budget": 5.0, "test_acc": 0.93 + r / 100}]
    frame = pd.DataFrame(rows)
    summary = summarise(frame)
    cell = summary[(summary.rule == "dcnas") & (summary.k == 3)].iloc[0]
    assert cell.replicates == 4 and cell.test_acc == pytest.approx(0.945) and cell.test_acc_ci > 0
    comps = comparisons(frame).set_index("against")
    assert comps.loc["global_es", "diff"] == pytest.approx(0.03) and comps.loc["global_es", "wins"] == 4
    assert comps.loc["random", "p_value"] == pytest.approx(1.0)
    assert set(comps.k) == {3}  # K = 1 is not compared with itself
