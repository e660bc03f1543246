"""Shared shell code of the two ablation stages (not a stage itself): the
channel-ratio space built from ``spaces.channel_ratio`` for the data's
shape, the replicates (each with its own D~ drawn from the subset stage's
D), the splits as in-memory tensors and the mapping of one function over
the architectures of every replicate (one fan-out item per architecture)."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch.utils.data import Subset

from nas_core.ablation.loop import stack_split
from nas_core.ablation.replicates import Replicate, draw_replicates
from nas_core.ablation.separate import ArchData
from nas_core.config import Params
from nas_core.spaces import SearchSpace, make_space
from tasks.context import StageContext
from tasks.placement import worker_count

#: The ablation's space (dc-nas.md §4.1: the paper's toy space).
SPACE = "channel_ratio"


def ablation_space(params: Params, ctx: StageContext) -> SearchSpace:
    """The space of ``spaces.channel_ratio`` for the data's input shape and
    number of classes."""
    info = ctx.data_info
    return make_space(SPACE, params.spaces.channel_ratio, info.input_shape, info.num_classes)


def replicates(params: Params, ctx: StageContext) -> list[Replicate]:
    """``ablation.repeats`` replicates, each with D~ = ``ablation.subset_fraction``
    of the subset stage's D and a probe of at most ``subset.probe_size`` of
    its images (the same draws in both stages: they depend only on the
    labels and the seed)."""
    full = ctx.splits()["full_train"]
    cfg = params.ablation
    return draw_replicates(ctx.source().train_targets, full.indices, cfg.subset_fraction, params.subset.probe_size,
                           cfg.repeats, params.runtime.seed)


def separate_data(ctx: StageContext, rep: Replicate) -> ArchData:
    """The replicate's D~ to train on, ``val`` for the early-stopping score,
    its probe images for Eq. 7."""
    pool, splits = ctx.source().train, ctx.splits()
    return ArchData(train=stack_split(Subset(pool, rep.subset.tolist())), val=stack_split(splits["val"]),
                    num_classes=ctx.data_info.num_classes, probe=stack_split(Subset(pool, rep.probe.tolist())).x)


def full_data(ctx: StageContext) -> ArchData:
    """D (``full_train``) to train on, ``val`` for Eq. 10, ``test`` to report."""
    splits = ctx.splits()
    return ArchData(train=stack_split(splits["full_train"]), val=stack_split(splits["val"]),
                    num_classes=ctx.data_info.num_classes, test=stack_split(splits["test"]))


def architecture_map(params: Params, ctx: StageContext, desc: str) -> Callable[[Callable, Sequence], list]:
    """Map ``fn`` over the pending architectures: one Prefect task per
    architecture through the stage's fan-out executor (``ctx.fan_out``,
    ``runtime.task_runner``) when more than one worker runs at a time, else
    in this process with a progress bar.

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
            names = [f"{desc.replace(' ', '-')}-r{getattr(item, 'replicate', 0)}-{getattr(item, 'index', i)}"
                     for i, item in enumerate(items)]
            return ctx.fan_out(fn, items, runtime, names=names, flow_name=f"{ctx.name}-fan-out")
        finally:
            torch.set_num_threads(threads)

    return run
