"""Shared shell code of the two ablation stages (not a stage itself): the
splits as in-memory tensors and the mapping of one function over the
architectures (one fan-out item per architecture)."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from flows.fanout import fan_out, worker_count
from nas_core.ablation.loop import stack_split
from nas_core.ablation.separate import ArchData
from nas_core.config import Params
from tasks.context import StageContext


def separate_data(ctx: StageContext) -> ArchData:
    """D~ (``subset``) to train on, ``val`` for the early-stopping score, the
    probe images for Eq. 7."""
    splits = ctx.splits()
    return ArchData(train=stack_split(splits["subset"]), val=stack_split(splits["val"]),
                    num_classes=ctx.data_info.num_classes, probe=stack_split(splits["probe"]).x)


def full_data(ctx: StageContext) -> ArchData:
    """D (``full_train``) to train on, ``val`` for Eq. 10, ``test`` to report."""
    splits = ctx.splits()
    return ArchData(train=stack_split(splits["full_train"]), val=stack_split(splits["val"]),
                    num_classes=ctx.data_info.num_classes, test=stack_split(splits["test"]))


def architecture_map(params: Params, ctx: StageContext, desc: str) -> Callable[[Callable, Sequence], list]:
    """Map ``fn`` over the pending architectures: one Prefect task per
    architecture through ``runtime.task_runner`` when more than one worker
    runs at a time, else in this process with a progress bar.

    Each network gets ``runtime.threads`` torch threads, default 1: these
    networks are tiny, and on the shared 2-core machine two intra-op
    threads per network made one 6-epoch digits run 10-30× slower in CPU
    time (measured: 0.5-2 s with 1 thread, 16-33 s with 2 under load);
    parallelism comes from running architectures side by side instead."""
    runtime = params.runtime

    def run(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        threads = torch.get_num_threads()
        torch.set_num_threads(runtime.threads or 1)
        try:
            if worker_count(runtime) <= 1 or len(items) <= 1:
                return [fn(item) for item in ctx.progress(items, desc=desc, total=len(items))]
            names = [f"{desc.replace(' ', '-')}-{getattr(item, 'index', i)}" for i, item in enumerate(items)]
            return fan_out(fn, items, runtime, names=names, flow_name=f"{ctx.name}-fan-out")
        finally:
            torch.set_num_threads(threads)

    return run
