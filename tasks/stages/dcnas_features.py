"""dcnas_features: the s × L × η feature tensor of the sampled architectures
(Eq. 7 by default, Eq. 6 with ``method: params``; nas_core.dcnas.features),
computed on the supernet of the one-shot strategy that searched, with the
weights of each chosen pretrain checkpoint (``dcnas_features.epochs``; None:
every checkpoint of the final supernet). Outputs features.npy (float32, rows
aligned with dcnas_sample/archs.npy) and summary.json (epochs used, chunk
size, trie size, walk, partitions, timing).

Eq. 7 fans out: the prefix trie of the architectures is cut into
``dcnas_features.partitions`` ranges of whole subtrees (None: the runtime's
worker count, tasks.placement.worker_count), one task per range on the
stage's task runner (``ctx.fan_out``: thread pool, Dask, Ray; one GPU per
task where present). A task is a picklable :class:`FeatureJob`: the worker
rebuilds the strategy from the pretrain checkpoints as this stage does
(tasks.nas.restored, cached per worker thread), loads the probe split
itself (cached per process), and returns its rows' features; they are put
back in architecture order, identical bit for bit to one extraction in
this process (nas_core.dcnas.features, "Partitions"). One partition runs in
this process without a task. Each task reports after every checkpoint epoch
(tasks.live): a line ``[dcnas_features] features-partNNN: epoch e/E
archs_per_s .. (s/epoch, ETA)`` in the stage log and ``partNNN_archs_per_s``
at step e on the stage's MLflow run.
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from nas_core.config import DataConfig, Params
from nas_core.dcnas.features import (
    BatchLimits,
    PrefixTrie,
    assemble_partitions,
    extract_output_features,
    extract_param_features,
    partition_rows,
    plan_batch_limits,
    plan_chunk_size,
    supernet_trie,
    threads_for_chunk,
)
from nas_core.io import load_npy, save_npy, write_json
from nas_core.spaces import SearchSpace
from nas_core.strategies import OneShotStrategy, SupernetSpec
from nas_core.train.checkpoint import load_checkpoint
from nas_core.train.loop import make_loader
from tasks.context import StageContext
from tasks.live import LiveRun
from tasks.nas import need, pick_epochs, pretrain_checkpoints, restored, same_supernet, supernet_spec, supernets
from tasks.placement import threads_per_task, worker_count, worker_device
from tasks.worker_cache import per_thread, subset_splits

SECTIONS = ("dcnas_features", "search")


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class CheckpointSet:
    """How a worker rebuilds the supernet of each chosen epoch: the search's
    strategy on ``space`` restored from its final checkpoint (``final``,
    as tasks.nas.restored does), then loaded with each checkpoint of
    ``paths`` in turn."""

    final: SupernetSpec
    space: SearchSpace
    paths: tuple[str, ...]


@dataclass(frozen=True)
class ProbeSet:
    """The subset stage's probe split, read in chunks of ``chunk`` images."""

    data: DataConfig
    project_root: str
    subset_dir: str
    chunk: int


@dataclass(frozen=True)
class FeatureJob:
    """One partition: ``rows`` (a range of the trie's sorted rows), walked
    with ``method`` (``trie`` or ``batched``) within ``limits``."""

    rows: np.ndarray
    checkpoints: CheckpointSet
    probe: ProbeSet
    bn: str
    method: str
    limits: BatchLimits
    device: str = "cpu"  # runtime.device; resolved in the worker (tasks.placement.worker_device)
    threads: int = 1
    live: LiveRun | None = None  # where the task reports each epoch (None: silent)


def _restored_strategy(spec: CheckpointSet, device: torch.device) -> OneShotStrategy:
    """The strategy restored from ``spec.final``, built once per worker
    thread while that file stays the same (loading the chosen epochs
    changes only the supernet's weights, which every job reloads)."""
    final = spec.final
    key = (final.strategy, json.dumps(final.config, sort_keys=True, default=str), final.seed, final.checkpoint,
           Path(final.checkpoint).stat().st_mtime_ns, repr(spec.space.fingerprint()), str(device))
    return per_thread("feature_strategy", key, lambda: final.restore(spec.space, device))


def _probe_split(probe: ProbeSet) -> Any:
    """The probe split (tasks.worker_cache: once per worker process)."""
    return subset_splits(probe.data, probe.project_root, probe.subset_dir)[1]["probe"]


def extract_partition(job: FeatureJob) -> dict[str, Any]:
    """Eq. 7 features of one partition's rows, in whatever worker runs it."""
    start, cpu_start = time.perf_counter(), time.thread_time()
    torch.set_num_threads(job.threads)
    device = worker_device(job.device)
    strategy = _restored_strategy(job.checkpoints, device)
    epochs = reported((strategy.load_supernet(load_checkpoint(p)) for p in job.checkpoints.paths), job)
    probe = make_loader(_probe_split(job.probe), job.probe.chunk, shuffle=False)
    features = extract_output_features(epochs, job.rows, probe, device, job.bn, job.method, limits=job.limits)
    return {"features": features, "seconds": time.perf_counter() - start, "cpu_seconds": time.thread_time() - cpu_start}


def reported(epochs: Iterator[Any], job: FeatureJob) -> Iterator[Any]:
    """``epochs`` (one supernet per checkpoint), reporting each epoch once
    the walk asks for the next one (its features are then done)."""
    if job.live is None:
        yield from epochs
        return
    reporter, start = job.live.reporter(), time.perf_counter()
    for epoch, supernet in enumerate(epochs, start=1):
        yield supernet
        reporter(epoch, {"archs_per_s": len(job.rows) * epoch / max(time.perf_counter() - start, 1e-9)})


def checkpoint_set(params: Params, ctx: StageContext, strategy: OneShotStrategy, checkpoints: list[tuple[int, Path]]
                   ) -> CheckpointSet:
    return CheckpointSet(supernet_spec(params, ctx, strategy.space), strategy.space,
                         tuple(str(path) for _, path in checkpoints))


def fan_out_features(params: Params, ctx: StageContext, trie: PrefixTrie, ranges: list[tuple[int, int]],
                     template: FeatureJob) -> tuple[np.ndarray, list[float]]:
    """The features of every partition through ``ctx.fan_out``, in
    architecture order, and each task's seconds."""
    names = [f"features-part{i:03d}" for i in range(len(ranges))]
    epochs = len(template.checkpoints.paths)
    jobs = [replace(template, rows=trie.rows[lo:hi],
                    live=LiveRun.for_run(ctx.log, name, epochs, f"part{i:03d}_", ctx.name))
            for i, ((lo, hi), name) in enumerate(zip(ranges, names))]
    results = ctx.fan_out(extract_partition, jobs, params.runtime, names=names, flow_name="dcnas-features")
    return assemble_partitions(trie, ranges, [r["features"] for r in results]), [r["seconds"] for r in results]


def output_features(params: Params, ctx: StageContext, strategy: OneShotStrategy, checkpoints: list[tuple[int, Path]],
                    archs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    """Eq. 7, in this process or fanned out (module docstring); records
    the plan in ``info``."""
    cfg, shape, supernet = params.dcnas_features, ctx.data_info.input_shape, strategy.supernet
    chunk = plan_chunk_size(supernet, archs, shape, ctx.device, cfg.memory_mb, cfg.probe_batch_size)
    trie = supernet_trie(supernet, archs)
    method = "batched" if cfg.batched and cfg.bn == "running" else "trie"
    limits = plan_batch_limits(supernet, archs, shape, ctx.device, cfg.memory_mb, chunk)
    ranges = partition_rows(trie, cfg.partitions or worker_count(params.runtime))
    available = torch.get_num_threads() if len(ranges) == 1 else threads_per_task(params.runtime)
    threads = params.runtime.threads or threads_for_chunk(supernet, archs, shape, ctx.device, chunk, available)
    info.update(chunk_size=chunk, probe_images=len(ctx.splits()["probe"]), trie_nodes=trie.total_nodes,
                naive_nodes=trie.naive_nodes, threads=threads, walk=method, partitions=len(ranges),
                partition_rows=[hi - lo for lo, hi in ranges])
    with torch_threads(threads):
        if len(ranges) == 1:
            probe = make_loader(ctx.splits()["probe"], chunk, shuffle=False)
            return extract_output_features(supernets(strategy, checkpoints), archs, probe, ctx.device, cfg.bn, method,
                                           progress=ctx.progress, num_epochs=len(checkpoints), limits=limits)
        template = FeatureJob(trie.rows[:0], checkpoint_set(params, ctx, strategy, checkpoints),
                              ProbeSet(params.data, str(ctx.root), str(ctx.artifacts("subset")), chunk),
                              cfg.bn, method, limits, params.runtime.device, threads)
        features, seconds = fan_out_features(params, ctx, trie, ranges, template)
    info["partition_seconds"] = seconds
    return features


def run(params: Params, ctx: StageContext) -> dict[str, float]:
    cfg = params.dcnas_features
    archs = load_npy(need(ctx.artifacts("dcnas_sample") / "archs.npy", "dcnas_sample"))
    _, strategy = restored(params, ctx)
    checkpoints = same_supernet(strategy, pick_epochs(pretrain_checkpoints(ctx), cfg.epochs), "dcnas_features.epochs")
    start, cpu_start = time.perf_counter(), time.process_time()
    info: dict[str, Any] = {"method": cfg.method, "epochs": [e for e, _ in checkpoints], "bn": cfg.bn}
    if cfg.method == "params":
        features = extract_param_features(supernets(strategy, checkpoints), archs, progress=ctx.progress,
                                          num_epochs=len(checkpoints))
    else:
        features = output_features(params, ctx, strategy, checkpoints, archs, info)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    if not np.isfinite(features).all():
        raise FloatingPointError("features contain NaN/inf")
    save_npy(ctx.out / "features.npy", features)
    info.update(shape=list(features.shape), seconds=seconds, cpu_seconds=cpu_seconds)
    write_json(ctx.out / "summary.json", info)
    ctx.log.log_dict(info, "dcnas_features/summary.json")
    metrics = {"num_archs": features.shape[0], "num_layers": features.shape[1], "num_epochs": features.shape[2],
               "seconds": seconds, "cpu_seconds": cpu_seconds,
               "archs_per_s": features.shape[0] / max(seconds, 1e-9),
               "feature_mean": float(features.mean()), "feature_std": float(features.std())}
    if "trie_nodes" in info:
        metrics["prefix_sharing_ratio"] = info["naive_nodes"] / info["trie_nodes"]
    return metrics
