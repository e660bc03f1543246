"""Per-cluster evaluation through a real Dask LocalCluster (2 worker
processes on 127.0.0.1) gives the same result as the thread pool."""
from __future__ import annotations

import os

import pytest

from flows.fanout import fan_out
from nas_core.config import RuntimeConfig
from nas_core.spaces import make_space
from nas_core.strategies.multi_trial import TrialRequest
from tasks.placement import threads_per_task
from tasks.stages.evaluate import evaluate_cluster
from tasks.trials import TrialJob
from tests.tasks.stage_project import make_project, tiny_params

pytestmark = pytest.mark.slow


def jobs_for(root, params):
    """Two clusters of one candidate each, scored by the train evaluator."""
    space = make_space("layerwise", {"preset": "digits"}, (1, 8, 8), 10)
    ops = [["k3_e1", "skip", "k5_e3", "skip", "k3_e6", "skip"], ["skip", "k3_e3", "skip", "k5_e1", "skip", "k3_e1"]]
    genotypes = [space.genotype_from_dict({"space": "layerwise", "preset": "digits", "ops": o}) for o in ops]
    train = {"epochs": 1, "batch_size": 64, "lr": 0.05}
    return [[TrialJob(TrialRequest(0, g, 3, 1), space, "train", train, params.data, str(root),
                      str(root / "artifacts" / "subset"), threads=1)] for g in genotypes]


def numbers(results):
    return [[r["metrics"] for r in cluster] for cluster in results]


def test_dask_local_cluster_matches_thread_pool(tmp_path, prefect_server, monkeypatch):
    monkeypatch.setenv("DASK_DISTRIBUTED__WORKER__DAEMON", "False")
    params = tiny_params(subset={"fraction": 0.5})
    root = make_project(tmp_path / "project", params)
    jobs = jobs_for(root, params)
    threaded = fan_out(evaluate_cluster, jobs, RuntimeConfig(task_runner="thread", max_workers=2))
    dasked = fan_out(evaluate_cluster, jobs, RuntimeConfig(task_runner="dask", dask_n_workers=2))
    assert numbers(dasked) == numbers(threaded)
    assert threaded[0][0]["metrics"] != threaded[1][0]["metrics"]


def test_threads_per_task():
    assert threads_per_task(RuntimeConfig(threads=3)) == 3
    assert threads_per_task(RuntimeConfig(max_workers=os.cpu_count() * 4)) == 1
    assert fan_out(str, [], RuntimeConfig()) == []
