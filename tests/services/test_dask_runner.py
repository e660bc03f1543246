"""flows/runners.py against a real Dask LocalCluster (2 worker processes)
and an external `dask scheduler` + `dask worker`s started here: same
results as the thread pool, environment propagated, non-daemonic workers,
GPU-annotated tasks only on workers that advertise a GPU."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from dask_jobs import train_tiny
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from service_procs import HOST, Service, free_port, port_open

from flows.runners import make_task_runner, task_resources, worker_env
from nas_core.config import RuntimeConfig

pytestmark = pytest.mark.slow
SEEDS = [0, 1, 2, 3]
HERE = Path(__file__).resolve().parent
train_task = task(train_tiny, cache_policy=NO_CACHE)


def run_mapped(runtime: RuntimeConfig, gpu: bool = False) -> list[dict]:
    @flow(task_runner=make_task_runner(runtime), validate_parameters=False)
    def mapped(seeds: list[int]) -> list[dict]:
        with task_resources(runtime, gpu=gpu):
            futures = [train_task.submit(seed) for seed in seeds]
        return [future.result() for future in futures]

    return mapped(SEEDS)


def numbers(results: list[dict]) -> list[tuple]:
    return [(r["seed"], r["loss"], r["weight_sum"]) for r in results]


@pytest.fixture
def marker(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("NASFLOW_TEST_MARKER", "propagated")
    return "propagated"


@pytest.fixture(scope="module")
def thread_results(prefect_server) -> list[dict]:
    return run_mapped(RuntimeConfig(task_runner="thread", max_workers=2))


def test_worker_env_carries_tracking_api_and_nasflow_vars(prefect_server, marker, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    env = worker_env()
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5999"
    assert env["PREFECT_API_URL"].startswith("http://")
    assert env["NASFLOW_TEST_MARKER"] == marker
    assert env["DASK_DISTRIBUTED__WORKER__DAEMON"] == "False"


def test_local_cluster_matches_thread_pool(prefect_server, thread_results, marker):
    results = run_mapped(RuntimeConfig(task_runner="dask", dask_n_workers=2, device="cpu"))
    assert numbers(results) == numbers(thread_results)
    assert all(r["pid"] != os.getpid() for r in results)
    assert len({r["pid"] for r in results}) == 2
    assert {r["marker"] for r in results} == {marker}
    assert not any(r["daemon"] for r in results)  # a DataLoader may start worker processes here


def test_gpu_resources_declared_only_when_a_gpu_is_in_use():
    import dask

    runtime = RuntimeConfig(task_runner="dask", device="cpu", gpus_per_task=1)
    with task_resources(runtime):
        assert "resources" not in dask.get_annotations()
    with task_resources(runtime, gpu=True):
        assert dask.get_annotations()["resources"] == {"GPU": 1}
    with task_resources(runtime.model_copy(update={"task_runner": "thread"}), gpu=True):
        assert "resources" not in dask.get_annotations()


@pytest.fixture(scope="module")
def external_cluster(tmp_path_factory, prefect_server):
    """`dask scheduler` and two `dask worker`s, one advertising GPU=1."""
    tmp_path = tmp_path_factory.mktemp("dask")
    port = free_port()
    address = f"tcp://{HOST}:{port}"
    env = {**worker_env(), "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parents[1])])}
    bin_dir = Path(sys.executable).parent
    services = [Service("dask-scheduler", [str(bin_dir / "dask"), "scheduler", "--host", HOST, "--port", str(port),
                                           "--dashboard-address", f"{HOST}:0"], tmp_path, env=env)]
    try:
        services[0].wait_until(port_open(port), 60, "scheduler port")
        for name, extra in (("cpu", []), ("gpu", ["--resources", "GPU=1"])):
            services.append(Service(f"dask-worker-{name}", [str(bin_dir / "dask"), "worker", address, "--name", name,
                                                            "--host", HOST, "--nthreads", "1",
                                                            "--dashboard-address", f"{HOST}:0", *extra],
                                    tmp_path, env=env))
        wait_for_workers(address, 2, services)
        yield address
    finally:
        for service in reversed(services):
            service.stop()


def wait_for_workers(address: str, n: int, services: list[Service]) -> None:
    from distributed import Client

    with Client(address, timeout=30) as client:
        try:
            client.wait_for_workers(n, timeout=90)
        except TimeoutError:
            raise TimeoutError("\n".join(s.tail() for s in services)) from None


def test_external_scheduler_matches_thread_pool_and_honours_gpu_resources(external_cluster, thread_results,
                                                                           marker):
    runtime = RuntimeConfig(task_runner="dask", dask_address=external_cluster, device="cpu")
    results = run_mapped(runtime)
    assert numbers(results) == numbers(thread_results)
    assert {r["marker"] for r in results} == {marker}  # set by the runner's worker plugin

    on_gpu = run_mapped(runtime, gpu=True)  # the worker plugin was registered once more: harmless
    assert numbers(on_gpu) == numbers(thread_results)
    assert {r["worker"] for r in on_gpu} == {"gpu"}  # only the worker advertising GPU=1


def test_external_scheduler_per_cluster_evaluation_matches_thread_pool(external_cluster, tmp_path):
    from flows.fanout import fan_out
    from tasks.stages.evaluate import evaluate_cluster
    from tests.tasks.stage_project import make_project, tiny_params
    from tests.tasks.test_dcnas_fanout import jobs_for, numbers

    params = tiny_params()
    jobs = jobs_for(make_project(tmp_path / "project", params), params)
    threaded = fan_out(evaluate_cluster, jobs, RuntimeConfig(task_runner="thread", max_workers=2))
    dasked = fan_out(evaluate_cluster, jobs, RuntimeConfig(task_runner="dask", dask_address=external_cluster))
    assert numbers(dasked) == numbers(threaded)
