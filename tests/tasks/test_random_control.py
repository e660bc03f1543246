"""The retrain stage's random control gets the compute DC-NAS's selection
spent: K full trainings plus the early-stopped trainings of the evaluate
stage, each worth (evaluate epochs / retrain epochs) x (|D~| / |D|)."""
from __future__ import annotations

from types import SimpleNamespace

from tasks.stages.retrain import dcnas_budget, random_budget
from tests.tasks.stage_project import tiny_params


def ctx_with(subset: int, full: int) -> SimpleNamespace:
    splits = {"subset": [0] * subset, "full_train": [0] * full}
    return SimpleNamespace(splits=lambda: splits)


def evaluated(candidates: list[int], evaluator: str = "train") -> dict:
    return {"evaluator": evaluator, "clusters": [{"candidates": [{}] * n} for n in candidates]}


def test_equal_compute_counts_the_picks_and_the_early_stopped_trainings():
    params = tiny_params(evaluate={"epochs": 2}, retrain={"epochs": 10})
    ctx = ctx_with(subset=500, full=1000)  # sigma = 0.5
    # 5 clusters, 3 candidates each: 5 + 15 * (2/10) * 0.5 = 6.5 full trainings
    assert dcnas_budget(params, ctx, evaluated([3, 3, 3, 3, 3])) == 6.5
    assert random_budget(params, ctx, evaluated([3, 3, 3, 3, 3])) == 6
    # a proxy evaluator trains nothing: the K picks only
    assert dcnas_budget(params, ctx, evaluated([3, 3], evaluator="zero_cost")) == 2
    assert random_budget(params, ctx, {"evaluator": "train", "clusters": []}) == 1
