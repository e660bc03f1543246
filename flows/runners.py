"""Task runners for fan-out inside a stage, chosen by ``params.runtime``:

- ``thread`` (default): ``ThreadPoolTaskRunner(max_workers)``.
- ``dask``: ``prefect_dask.DaskTaskRunner`` on the scheduler at
  ``runtime.dask_address`` when set, otherwise on a ``distributed.LocalCluster``
  of ``runtime.dask_n_workers`` single-threaded worker processes bound to
  127.0.0.1 (dashboard on a free loopback port), started once per process
  and reused by every fan-out of that process.
- ``ray``: ``prefect_ray.RayTaskRunner`` (the optional extra ``nasflow[ray]``);
  ``ray.init`` joins the cluster named by ``RAY_ADDRESS`` when it is set.

Workers get :func:`worker_env` (tracking URI, Prefect API URL, NASFLOW_*
variables, non-daemonic Dask workers): a LocalCluster's nannies start with
it, Ray passes it as the job's ``runtime_env``, and on an existing Dask
cluster a worker plugin sets it in every worker process when the runner
connects. Variables read when a process starts (the daemon flag, a
``PREFECT_API_URL`` read at import) must still be given to ``dask worker``
by whoever starts it (README "Scale out").

Accelerators: a training task declares what it needs with
:func:`task_resources` (Dask worker resources ``{"GPU": gpus_per_task}``, Ray
``num_gpus``), but only when a GPU is in use; on a CPU-only machine tasks
run unchanged. Inside the task ``tasks.placement.worker_device`` picks the
device of the worker that runs it.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
from typing import Any, ContextManager

import torch
from distributed.diagnostics.plugin import WorkerPlugin
from prefect.task_runners import ThreadPoolTaskRunner

from nas_core.config import RuntimeConfig

LOOPBACK = "127.0.0.1"
PROPAGATED = ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_HOME", "MLFLOW_DISABLE_TELEMETRY",
              "DO_NOT_TRACK", "DVC_NO_ANALYTICS")
RAY_EXTRA = "pip install -e '.[ray]'"


def prefect_api_url() -> str | None:
    """The Prefect API this process reports to: PREFECT_API_URL, else the
    URL in the active settings (e.g. a test harness), else None (ephemeral)."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    return str(url) if url else None


def ensure_api_url() -> str:
    """:func:`prefect_api_url`, or, in ephemeral mode, the URL of a local
    API server started now (this process's lifetime), so worker processes
    share it instead of each starting its own ephemeral server."""
    url = prefect_api_url()
    if url:
        return url
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    server = SubprocessASGIServer()
    server.start(timeout=int(get_current_settings().server.ephemeral.startup_timeout_seconds))
    return str(server.api_url)


def worker_env() -> dict[str, str]:
    """Environment for worker processes: tracking URI, Prefect API URL (so a
    worker reports to this flow's API instead of starting its own ephemeral
    server), every NASFLOW_* variable, and Dask workers started non-daemonic
    so a DataLoader with ``num_workers > 0`` can run inside them."""
    env = {key: os.environ[key] for key in PROPAGATED if os.environ.get(key)}
    env.update({key: value for key, value in os.environ.items() if key.startswith("NASFLOW_")})
    api = prefect_api_url()
    if api:
        env["PREFECT_API_URL"] = api
    env["DASK_DISTRIBUTED__WORKER__DAEMON"] = "False"
    return env


def gpu_in_use(runtime: RuntimeConfig) -> bool:
    """True when tasks train on CUDA: ``runtime.device`` names CUDA, or is
    ``auto`` on a machine that has it."""
    if runtime.device.startswith("cuda"):
        return True
    return runtime.device == "auto" and torch.cuda.is_available()


class EnvPlugin(WorkerPlugin):
    """Dask worker plugin: sets the given variables in each worker process
    (for clusters this process did not start)."""

    name = "nasflow-env"

    def __init__(self, env: dict[str, str]) -> None:
        self.env = dict(env)

    def setup(self, worker: Any) -> None:
        os.environ.update(self.env)

    def teardown(self, worker: Any) -> None:
        """Nothing to undo: the variables stay for the worker's lifetime."""


def _dask_runner_class() -> type:
    from prefect_dask import DaskTaskRunner

    class NasflowDaskTaskRunner(DaskTaskRunner):
        """DaskTaskRunner that registers :class:`EnvPlugin` when it connects."""

        @property
        def client(self) -> Any:
            fresh = self._client is None
            client = super().client
            if fresh:
                client.register_plugin(EnvPlugin(worker_env()), name=EnvPlugin.name)
            return client

    return NasflowDaskTaskRunner


def local_cluster_kwargs(runtime: RuntimeConfig, gpu: bool) -> dict[str, Any]:
    """A LocalCluster of single-threaded worker processes on the loopback
    interface; with a GPU, one worker per GPU (at most ``dask_n_workers``),
    each advertising ``GPU=1``."""
    n_workers = runtime.dask_n_workers
    kwargs: dict[str, Any] = {"threads_per_worker": 1, "processes": True, "host": LOOPBACK,
                              "dashboard_address": f"{LOOPBACK}:0", "env": worker_env()}
    if gpu:
        n_workers = max(1, min(n_workers, torch.cuda.device_count()))
        kwargs["resources"] = {"GPU": 1}
    kwargs["n_workers"] = n_workers
    return kwargs


_CLUSTERS: dict[str, Any] = {}


def shared_local_cluster(kwargs: dict[str, Any]) -> str:
    """The address of a LocalCluster with ``kwargs``, started once per
    process and kept until it exits: a stage that fans out many times (the
    rounds of a multi-trial search) pays the workers' start-up once, and
    the workers keep what they cached (loaded splits, a loaded supernet)."""
    key = json.dumps(kwargs, sort_keys=True, default=str)
    cluster = _CLUSTERS.get(key)
    if cluster is None or cluster.status.name != "running":
        from distributed import LocalCluster

        cluster = _CLUSTERS[key] = LocalCluster(**kwargs)
        atexit.register(_close_quietly, cluster)
    return cluster.scheduler_address


def _close_quietly(cluster: Any) -> None:
    """Close a shared cluster at exit without its shutdown chatter reaching
    log handlers that Prefect has already torn down."""
    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    cluster.close()


def configure_dask_workers() -> None:
    """Settings for the Dask workers this process starts: non-daemonic, and
    without the nanny's ``MALLOC_TRIM_THRESHOLD_=65536``, which fixes glibc's
    mmap threshold at 128 KiB so every large tensor is mapped and unmapped
    again (torch ran 2.5-3x slower in such workers than in this process;
    measured on DC-NAS feature extraction)."""
    import dask

    os.environ["DASK_DISTRIBUTED__WORKER__DAEMON"] = "False"
    dask.config.set({"distributed.worker.daemon": False,
                     "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None})


def make_dask_runner(runtime: RuntimeConfig) -> Any:
    configure_dask_workers()
    runner_class = _dask_runner_class()
    if runtime.dask_address:
        return runner_class(address=runtime.dask_address)
    os.environ["PREFECT_API_URL"] = ensure_api_url()
    return runner_class(address=shared_local_cluster(local_cluster_kwargs(runtime, gpu_in_use(runtime))))


def make_ray_runner(runtime: RuntimeConfig) -> Any:
    try:
        from prefect_ray import RayTaskRunner
    except ImportError:
        raise RuntimeError(f"runtime.task_runner = 'ray' needs prefect-ray and ray, which are not installed: "
                           f"{RAY_EXTRA}, or set runtime.task_runner to 'thread' or 'dask'") from None
    init_kwargs: dict[str, Any] = {"runtime_env": {"env_vars": worker_env()}}
    if os.environ.get("RAY_ADDRESS"):
        return RayTaskRunner(address=os.environ["RAY_ADDRESS"], init_kwargs=init_kwargs)
    return RayTaskRunner(init_kwargs={**init_kwargs, "include_dashboard": False})


def make_task_runner(runtime: RuntimeConfig) -> Any:
    """The Prefect task runner named by ``runtime.task_runner``."""
    if runtime.task_runner == "thread":
        return ThreadPoolTaskRunner(max_workers=runtime.max_workers)
    if runtime.task_runner == "dask":
        return make_dask_runner(runtime)
    if runtime.task_runner == "ray":
        return make_ray_runner(runtime)
    raise ValueError(f"runtime.task_runner = {runtime.task_runner!r}: allowed thread, dask, ray")


def task_resources(runtime: RuntimeConfig, gpu: bool | None = None) -> ContextManager[Any]:
    """Wrap ``task.submit(...)`` calls of a training task in this: it
    declares ``runtime.gpus_per_task`` GPUs to the scheduler (Dask worker
    resources through ``dask.annotate``, Ray ``num_gpus`` through
    ``prefect_ray.context.remote_options``), so a cluster runs one such task
    per GPU. Nothing is declared with the thread pool, without a GPU in use
    (``gpu`` defaults to :func:`gpu_in_use`) or when ``gpus_per_task`` is 0:
    a CPU-only machine runs the tasks unchanged."""
    gpu = gpu_in_use(runtime) if gpu is None else gpu
    if not gpu or runtime.gpus_per_task == 0 or runtime.task_runner == "thread":
        return contextlib.nullcontext()
    if runtime.task_runner == "dask":
        import dask

        return dask.annotate(resources={"GPU": runtime.gpus_per_task})
    from prefect_ray.context import remote_options

    return remote_options(num_gpus=runtime.gpus_per_task)
