"""flows/runners.py without starting anything: the runner params name,
its loopback-only LocalCluster, the Ray error, the CPU device choice."""
from __future__ import annotations

import importlib.util

import pytest
import torch
from prefect.task_runners import ThreadPoolTaskRunner

from flows.runners import local_cluster_kwargs, make_task_runner
from nas_core.config import RuntimeConfig
from tasks.placement import worker_device


def test_thread_pool_by_default():
    runner = make_task_runner(RuntimeConfig(max_workers=3))
    assert isinstance(runner, ThreadPoolTaskRunner) and runner._max_workers == 3


def test_dask_local_cluster_binds_loopback_and_is_cpu_only_here():
    kwargs = local_cluster_kwargs(RuntimeConfig(task_runner="dask", dask_n_workers=3), gpu=False)
    assert kwargs["host"] == "127.0.0.1" and kwargs["dashboard_address"].startswith("127.0.0.1:")
    assert kwargs["n_workers"] == 3 and kwargs["threads_per_worker"] == 1 and "resources" not in kwargs
    assert kwargs["env"]["DASK_DISTRIBUTED__WORKER__DAEMON"] == "False"


def test_dask_runner_for_an_existing_scheduler():
    runner = make_task_runner(RuntimeConfig(task_runner="dask", dask_address="tcp://127.0.0.1:8786"))
    assert runner.address == "tcp://127.0.0.1:8786"


@pytest.mark.skipif(importlib.util.find_spec("prefect_ray") is not None, reason="prefect-ray is installed")
def test_ray_without_the_extra_names_the_install_command():
    with pytest.raises(RuntimeError, match=r"pip install -e '\.\[ray\]'"):
        make_task_runner(RuntimeConfig(task_runner="ray"))


def test_worker_device_on_the_cpu():
    assert worker_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert worker_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="no CUDA device"):
            worker_device("cuda")
