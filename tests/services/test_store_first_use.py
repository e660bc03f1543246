"""Concurrent first use of a brand-new tracking store: four processes and the
two workers of a real Dask LocalCluster open one new sqlite store at the
same moment, create runs and log metrics. Each must succeed and every run
and metric must be there (without the store lock, MLflow's schema migration
races and most of them exit with an alembic error)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import store_writers
from mlflow.tracking import MlflowClient
from service_procs import HOST

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent
PROCESSES = 4


def wait_ready(gate: Path, names: list[str], procs: list[subprocess.Popen], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not all((gate / f"ready-{n}").exists() for n in names):
        failed = [p for p in procs if p.poll() not in (None, 0)]
        if failed:
            raise RuntimeError(f"writer exited early: {failed[0].communicate()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"writers not ready: {[n for n in names if not (gate / f'ready-{n}').exists()]}")
        time.sleep(0.05)


def test_processes_and_dask_workers_share_a_new_store(tmp_path, monkeypatch):
    from distributed import Client, LocalCluster

    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    uri = f"sqlite:///{db}"
    gate = tmp_path / "gate"
    gate.mkdir()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), str(HERE.parents[1])]))
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    names = [f"proc-{i}" for i in range(PROCESSES)]
    procs = [subprocess.Popen([sys.executable, str(HERE / "store_writers.py"), uri, name, str(gate)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in names]
    try:
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host=HOST,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            workers = sorted(client.scheduler_info()["workers"])
            futures = [client.submit(store_writers.write_run, uri, f"dask-{i}", str(gate), workers=[w], pure=False)
                       for i, w in enumerate(workers)]
            all_names = names + [f"dask-{i}" for i in range(len(workers))]
            wait_ready(gate, all_names, procs)
            assert not db.exists()  # nobody opened the store before the gate
            (gate / "go").touch()
            run_ids = client.gather(futures)
        outputs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
        run_ids.append(out.strip().splitlines()[-1])

    client = MlflowClient(tracking_uri=uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == store_writers.EXPERIMENT]
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_id for r in runs) == sorted(run_ids) and len(runs) == PROCESSES + 2
    assert {r.info.run_name for r in runs} == set(all_names)
    for run in runs:
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "loss")
        assert sorted(m.step for m in history) == list(range(store_writers.STEPS))
        assert len(client.get_metric_history(run.info.run_id, "acc")) == store_writers.STEPS
