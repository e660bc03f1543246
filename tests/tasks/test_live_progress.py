"""Live progress from fanned-out training tasks (tasks/live.py): a task's
nested MLflow run holds its epoch-1 metrics while the task is still running
(in-process, on Prefect's thread pool and on a real Dask LocalCluster), the
stage log gets one progress line per epoch, and the end-of-task logging
adds only what was not logged live (no metric twice, none lost)."""
from __future__ import annotations

import dataclasses
import functools
import io
import json
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from nas_core.config import RuntimeConfig
from nas_core.spaces import make_space
from nas_core.train.fit import FitSettings
from tasks.context import in_order
from tasks.dcnas_train import TrainJob, log_history, train_candidate
from tasks.live import EpochReporter, LiveRun, progress_line
from tasks.stages import evaluate, retrain
from tasks.tracking import RunLogger
from tests.conftest import REPO, fd2_to
from tests.tasks.live_gate import GatedLive
from tests.tasks.stage_project import make_project, run_stage, tiny_params

EPOCHS = 2
SPACE = make_space("layerwise", {"preset": "digits"}, (1, 8, 8), 10)
WAIT_S = 240.0


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, Any]:
    params = tiny_params(evaluate={"epochs": EPOCHS}, retrain={"epochs": EPOCHS, "include_baseline": False})
    return make_project(tmp_path_factory.mktemp("live") / "project", params), params


@pytest.fixture(scope="module")
def store(project) -> RunLogger:
    """One sqlite MLflow store for the module (a new store costs seconds)."""
    root, _ = project
    return RunLogger.start(f"sqlite:///{root}/mlflow.db", "tests-live", "pipeline", root)


@functools.lru_cache(maxsize=None)
def reader(uri: str) -> MlflowClient:
    """The test's own client of the store (not the workers' or the caller's)."""
    return MlflowClient(tracking_uri=uri)


def steps(log: RunLogger, key: str) -> list[int]:
    """The steps of ``key`` in ``log``'s run, as stored."""
    return sorted(m.step for m in reader(log.client.tracking_uri).get_metric_history(log.run_id, key))


def gated_job(root: Path, params: Any, log: RunLogger, gate: Path, name: str = "finalist0") -> TrainJob:
    live = GatedLive(**dataclasses.asdict(LiveRun.for_run(log, name, EPOCHS, stage="retrain")), gate=str(gate))
    return TrainJob(name=name, space=SPACE, genotype=SPACE.random(np.random.default_rng(1)).to_dict(),
                    settings=FitSettings(epochs=EPOCHS, batch_size=64, seed=3), data=params.data,
                    project_root=str(root), subset_dir=str(root / "artifacts" / "subset"), train_split="subset",
                    threads=1, live=live)


def wait_for_epoch1(log: RunLogger, task: Future) -> list[int]:
    """Poll the store until the run holds ``val_acc``; fail if the task ends first."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        found = steps(log, "val_acc")
        if found:
            return found
        if task.done():
            task.result()  # a worker error surfaces here
            pytest.fail("the task ended before its run held any epoch metric")
        time.sleep(0.1)
    pytest.fail(f"no epoch metric in the run after {WAIT_S} s")


def live_while_running(root: Path, params: Any, store: RunLogger, fan_out: Callable[[list[TrainJob]], list[Any]],
                       tag: str) -> None:
    log = store.child(f"retrain:finalist0-{tag}")
    gate = root / f"gate-{tag}"
    job = gated_job(root, params, log, gate)
    with ThreadPoolExecutor(1) as pool:
        task = pool.submit(fan_out, [job])
        assert wait_for_epoch1(log, task) == [1]  # epoch 1 is in the store ...
        assert not task.done()  # ... while the task is still running (held at the gate)
        assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr"} <= set(
            reader(log.client.tracking_uri).get_run(log.run_id).data.metrics)
        gate.touch()
        [result] = task.result(timeout=WAIT_S)
    assert result["live_epochs"] == [1, 2]
    log_history(log, result)  # the caller's end-of-task logging
    assert steps(log, "val_acc") == steps(log, "train_loss") == [1, 2]  # once per epoch, no duplicate


def test_in_process_fan_out_logs_epoch1_before_the_task_ends(project, store, capfd) -> None:
    root, params = project
    live_while_running(root, params, store, lambda jobs: in_order(train_candidate, jobs), "inproc")
    err = capfd.readouterr().err
    for epoch in (1, 2):
        assert re.search(rf"\[retrain\] finalist0: epoch {epoch}/2 train_loss \d\.\d{{4}} train_acc \d\.\d{{4}} "
                         rf"val_loss \d+\.\d{{4}} val_acc \d\.\d{{4}} \(\d+\.\d s/epoch, ETA \d+s\)", err), err


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["thread", "dask"])
def test_task_runner_fan_out_logs_epoch1_before_the_task_ends(project, store, runner, prefect_server,
                                                               monkeypatch, tmp_path) -> None:
    from flows.fanout import fan_out

    monkeypatch.setenv("DASK_DISTRIBUTED__WORKER__DAEMON", "False")
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # workers import tests.tasks.live_gate
    root, params = project
    runtime = RuntimeConfig(task_runner=runner, max_workers=1, dask_n_workers=1)
    with fd2_to(tmp_path / "stderr.txt"):
        live_while_running(root, params, store,
                           lambda jobs: fan_out(train_candidate, jobs, runtime, names=["finalist0"]), runner)
    if runner == "dask":  # the line written in the worker process reaches the stage's stderr
        assert "[retrain] finalist0: epoch 2/2 train_loss" in (tmp_path / "stderr.txt").read_text()


def representatives(root: Path) -> None:
    """A dcnas_cluster output: two clusters, two candidates and one."""
    rng = np.random.default_rng(5)
    clusters = [{"cluster": c, "size": 4, "candidates": [
        {"genotype": SPACE.random(rng).to_dict(), "label": f"c{c}-{j}", "eq9": 1.0 - j / 10} for j in range(n)]}
        for c, n in ((0, 2), (1, 1))]
    out = root / "artifacts" / "dcnas_cluster"
    out.mkdir(parents=True, exist_ok=True)
    (out / "representatives.json").write_text(json.dumps({"clusters": clusters}))


def nested_runs(parent: RunLogger, prefix: str) -> list[Any]:
    """Runs named ``prefix...`` whose parent is a child of ``parent``."""
    runs = reader(parent.client.tracking_uri).search_runs([parent.experiment_id], max_results=500)
    stages = {r.info.run_id for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.run_id}
    return [r for r in runs if r.info.run_name.startswith(prefix) and r.data.tags.get("mlflow.parentRunId") in stages]


def test_evaluate_and_retrain_log_each_epoch_once_with_progress_lines(project, store, capfd) -> None:
    root, params = project
    representatives(root)
    parent = store.child("pipeline-stages")
    run_stage(root, params, evaluate, "evaluate", parent)
    run_stage(root, params, retrain, "retrain", parent)
    err = capfd.readouterr().err
    client = reader(parent.client.tracking_uri)
    cluster_runs = nested_runs(parent, "evaluate:cluster")
    assert sorted(r.info.run_name for r in cluster_runs) == ["evaluate:cluster0", "evaluate:cluster1"]
    for run in cluster_runs:
        n = 2 if run.info.run_name.endswith("0") else 1
        for j in range(n):
            history = client.get_metric_history(run.info.run_id, f"cand{j}_val_acc")
            assert sorted(m.step for m in history) == [1, 2], run.info.run_name
            assert f"[evaluate] {run.info.run_name.split(':')[1]}-cand{j}: epoch 2/2" in err
    finalist_runs = nested_runs(parent, "retrain:cluster")
    assert len(finalist_runs) == 2
    for run in finalist_runs:
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train_loss")) == [1, 2]
        assert f"[retrain] {run.info.run_name.split(':')[1]}: epoch 1/2" in err


def test_failed_live_logging_is_reported_once_and_left_to_the_end_of_task(store) -> None:
    log = store.child("retrain:x")
    stream = io.StringIO()
    ticks = iter([0.0, 10.0, 20.0])
    live = dataclasses.replace(LiveRun.for_run(log, "x", 3, stage="retrain"), run_id="no-such-run")
    reporter = EpochReporter(live, stream, clock=lambda: next(ticks))
    rows = [{"epoch": e, "lr": 0.1, "train_loss": 1.0 / e, "train_acc": 0.5, "val_loss": 1.0, "val_acc": 0.4}
            for e in (1, 2)]
    for row in rows:
        reporter(row["epoch"], row)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("[retrain] x: epoch 1/3 train_loss 1.0000 train_acc 0.5000 val_loss 1.0000 "
                               "val_acc 0.4000 (10.0 s/epoch, ETA 20s) [live MLflow logging off:")
    assert "live MLflow logging off" not in lines[1] and lines[1].endswith("(10.0 s/epoch, ETA 10s)")
    assert reporter.logged_epochs == []
    log_history(log, {"history": rows, "live_epochs": reporter.logged_epochs})
    assert steps(log, "train_loss") == [1, 2]  # nothing lost


def test_progress_line_without_the_usual_metrics_and_long_eta() -> None:
    live = LiveRun(None, None, "trial7", 100, stage="search")
    line = progress_line(live, 2, {"lr": 0.1, "score": 0.25}, elapsed=150.0)
    assert line == "[search] trial7: epoch 2/100 score 0.2500 (75.0 s/epoch, ETA 2h02m)"


def test_a_torchrun_replica_logger_gives_progress_lines_only() -> None:
    from flows.distributed import ReplicaLogger

    live = LiveRun.for_run(ReplicaLogger(), "cluster0", 3, stage="retrain")
    assert (live.tracking_uri, live.run_id) == (None, None)
    stream = io.StringIO()
    reporter = live.reporter(stream)
    reporter(1, {"train_loss": 0.5, "val_acc": 0.75})
    assert reporter.logged_epochs == [] and stream.getvalue().startswith("[retrain] cluster0: epoch 1/3 train_loss")
