"""Fan-out inside a stage: map a function over items as one Prefect task per
item, through the task runner chosen by ``params.runtime``
(flows/runners.py: thread pool by default, Dask LocalCluster or scheduler,
Ray). With a GPU in use each submit declares ``runtime.gpus_per_task`` to
the scheduler (``task_resources``), and the task picks its worker's device
with ``flows.runners.worker_device``.

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

from flows.runners import make_task_runner, task_resources
from nas_core.config import RuntimeConfig
from nas_core.train.distributed import is_distributed


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


def fan_out(fn: Callable[[Any], Any], items: Sequence[Any], runtime: RuntimeConfig,
            names: Sequence[str] | None = None, flow_name: str = "fan-out") -> list[Any]:
    """``[fn(item) for item in items]``, one Prefect task per item through the
    configured task runner; results in the order of ``items``. A failing item
    fails the flow (its exception is raised here). Under torchrun the items
    run in order in this process instead: every rank must take part in each
    item's data-parallel training (nas_core.train.fit), and the task runner's
    workers are not in the process group."""
    items = list(items)
    names = list(names) if names is not None else [f"{fn.__name__}-{i}" for i in range(len(items))]
    if len(names) != len(items):
        raise ValueError(f"fan_out: {len(names)} names for {len(items)} items")
    if not items:
        return []
    if is_distributed():  # torchrun: all ranks train each item together, one item after another
        return [fn(item) for item in items]
    item_task = task(fn, name=fn.__name__, cache_policy=NO_CACHE, retries=0)

    @flow(name=flow_name, task_runner=make_task_runner(runtime), validate_parameters=False)
    def fan_out_flow(items: list[Any], names: list[str]) -> list[Any]:
        with task_resources(runtime):
            futures = [item_task.with_options(task_run_name=name).submit(item) for item, name in zip(items, names)]
        return [future.result() for future in futures]

    return fan_out_flow(items, names)


def fan_out_with_runs(fn: Callable[[Any], Any], items: Sequence[Any], runtime: RuntimeConfig,
                      runs: Sequence[Any], names: Sequence[str], flow_name: str) -> list[Any]:
    """``fan_out`` for items that each own a nested MLflow run (``runs``,
    created in the calling thread): when the fan-out fails, every one of
    those runs is ended FAILED before the error propagates."""
    try:
        return fan_out(fn, items, runtime, names=names, flow_name=flow_name)
    except BaseException:
        for log in runs:
            log.end("FAILED")
        raise
