"""Fan-out inside a stage: map a function over items as one Prefect task per
item, through the task runner chosen by ``params.runtime``:

- ``thread`` (default): ``ThreadPoolTaskRunner(max_workers)``.
- ``dask``: ``prefect_dask.DaskTaskRunner`` on an existing scheduler
  (``runtime.dask_address``) or a ``distributed.LocalCluster`` of
  ``runtime.dask_n_workers`` single-threaded worker processes bound to
  127.0.0.1 (dashboard on a free loopback port). Workers are started non-daemonic so a
  DataLoader with workers can run inside them, and they inherit
  ``PREFECT_API_URL`` so they report to this process's Prefect API instead
  of each starting an ephemeral server (ENVIRONMENT.md).
- ``ray``: ``prefect_ray.RayTaskRunner`` (optional extra ``nasflow[ray]``).

The mapped function must be importable by name (a module-level function)
and its items and results picklable: with Dask they cross processes. It
should not talk to MLflow itself: the caller creates the nested runs with an
explicit parent run id (``ctx.log.child``) in its own thread and logs the
returned results there.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from nas_core.config import RuntimeConfig


def worker_count(runtime: RuntimeConfig) -> int:
    """How many items run at once under ``runtime``."""
    if runtime.task_runner == "dask" and not runtime.dask_address:
        return runtime.dask_n_workers
    return runtime.max_workers


def threads_per_task(runtime: RuntimeConfig) -> int:
    """torch threads for one task: the cores shared by the parallel tasks
    (``runtime.threads`` wins when set)."""
    if runtime.threads:
        return runtime.threads
    return max(1, (os.cpu_count() or 1) // worker_count(runtime))


def _export_api_url() -> None:
    """Make worker processes use this process's Prefect API: the configured
    URL (also the test harness's), or a local ephemeral server started now."""
    if os.environ.get("PREFECT_API_URL"):
        return
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        from prefect.server.api.server import SubprocessASGIServer

        server = SubprocessASGIServer()
        server.start(timeout=int(get_current_settings().server.ephemeral.startup_timeout_seconds))
        url = server.api_url
    os.environ["PREFECT_API_URL"] = str(url)


def make_task_runner(runtime: RuntimeConfig) -> Any:
    """The Prefect task runner named by ``runtime.task_runner``."""
    if runtime.task_runner == "thread":
        return ThreadPoolTaskRunner(max_workers=runtime.max_workers)
    if runtime.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if runtime.dask_address:
            return DaskTaskRunner(address=runtime.dask_address)
        os.environ.setdefault("DASK_DISTRIBUTED__WORKER__DAEMON", "False")
        import dask

        dask.config.set({"distributed.worker.daemon": False})
        _export_api_url()
        return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                              cluster_kwargs={"n_workers": runtime.dask_n_workers, "threads_per_worker": 1,
                                              "processes": True, "host": "127.0.0.1",
                                              "dashboard_address": "127.0.0.1:0"})
    if runtime.task_runner == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError:
            raise RuntimeError("runtime.task_runner = 'ray' needs prefect-ray and ray: "
                               "pip install 'nasflow[ray]', or use 'thread' or 'dask'") from None
        return RayTaskRunner()
    raise ValueError(f"runtime.task_runner = {runtime.task_runner!r}: allowed thread, dask, ray")


def fan_out(fn: Callable[[Any], Any], items: Sequence[Any], runtime: RuntimeConfig,
            names: Sequence[str] | None = None, flow_name: str = "fan-out") -> list[Any]:
    """``[fn(item) for item in items]``, one Prefect task per item through the
    configured task runner; results in the order of ``items``. A failing item
    fails the flow (its exception is raised here)."""
    items = list(items)
    names = list(names) if names is not None else [f"{fn.__name__}-{i}" for i in range(len(items))]
    if len(names) != len(items):
        raise ValueError(f"fan_out: {len(names)} names for {len(items)} items")
    if not items:
        return []
    item_task = task(fn, name=fn.__name__, cache_policy=NO_CACHE, retries=0)

    @flow(name=flow_name, task_runner=make_task_runner(runtime), validate_parameters=False)
    def fan_out_flow(items: list[Any], names: list[str]) -> list[Any]:
        futures = [item_task.with_options(task_run_name=name).submit(item) for item, name in zip(items, names)]
        return [future.result() for future in futures]

    return fan_out_flow(items, names)
