"""Fan-out inside a stage: map a function over items as one Prefect task per
item, through the task runner chosen by ``params.runtime``
(flows/runners.py: thread pool by default, Dask LocalCluster or scheduler,
Ray). With a GPU in use each submit declares ``runtime.gpus_per_task`` to
the scheduler (``task_resources``), and the task picks its worker's device
with ``tasks.placement.worker_device``.

The mapped function must be importable by name (a module-level function)
and its items and results picklable: with Dask they cross processes. It
should not talk to MLflow itself: the caller creates the nested runs with an
explicit parent run id (``ctx.log.child``) in its own thread and logs the
returned results there. Stages do not import this module: the stage runner
hands :func:`fan_out` to them as ``StageContext.fan_out`` (tasks never
import flows).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.runners import make_task_runner, task_resources
from nas_core.config import RuntimeConfig
from nas_core.train.distributed import is_distributed


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
