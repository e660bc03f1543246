"""Where fan-out items run: how many at once, how many torch threads each,
and which device a task trains on inside its worker. Stages and the fan-out
executor (flows/fanout.py, handed to stages through the StageContext) both
read these, so they sit below both."""
from __future__ import annotations

import os
import zlib

import torch

from nas_core.config import RuntimeConfig
from nas_core.runtime import resolve_device
from nas_core.train.distributed import rank_device


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


def _dask_worker_index() -> int | None:
    """The index of the Dask worker running this code (LocalCluster names
    its workers 0, 1, ...), or None outside a Dask worker."""
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return None
    try:
        return int(name)
    except (TypeError, ValueError):
        return zlib.crc32(str(name).encode())


def worker_device(requested: str) -> torch.device:
    """The device a task should train on, called inside the task.

    ``requested`` is ``runtime.device``. Without CUDA (or for ``cpu`` /
    ``mps``) it is resolved as everywhere else. With CUDA and a bare
    ``cuda`` / ``auto`` request: a process that sees a single GPU (Ray sets
    CUDA_VISIBLE_DEVICES per task; one ``dask worker`` per GPU does the same)
    uses ``cuda:0``; a LocalCluster worker uses ``cuda:(index mod
    device_count)``, so worker i trains on GPU i. An explicit ``cuda:N`` is
    kept. Under torchrun every CUDA request means the rank's own GPU
    (``cuda:LOCAL_RANK``). The chosen GPU becomes the process's current
    device."""
    device = rank_device(resolve_device(requested))
    if device.type != "cuda" or device.index is not None:
        return device
    count = torch.cuda.device_count()
    index = _dask_worker_index()
    device = torch.device("cuda", 0 if count == 1 or index is None else index % count)
    torch.cuda.set_device(device)
    return device
