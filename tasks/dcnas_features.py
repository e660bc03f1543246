"""dcnas_features: the s × L × η feature tensor of the sampled architectures
(Eq. 7 by default, Eq. 6 with ``method: params``; nas_core.dcnas.features),
computed on the supernet of the one-shot strategy that searched, with the
weights of each chosen pretrain checkpoint (``dcnas_features.epochs``; None:
every checkpoint of the final supernet). Outputs features.npy (float32, rows
aligned with dcnas_sample/archs.npy) and summary.json (epochs used, chunk
size, trie size, timing)."""
from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator

import numpy as np
import torch

from nas_core.config import Params
from nas_core.dcnas.features import (extract_output_features, extract_param_features, plan_chunk_size,
                                     supernet_trie, threads_for_chunk)
from nas_core.io import load_npy, save_npy, write_json
from nas_core.train.loop import make_loader
from tasks.nas import need, pick_epochs, pretrain_checkpoints, restored, same_supernet, supernets

SECTIONS = ("dcnas_features", "search")


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run(params: Params, ctx: Any) -> dict[str, float]:
    cfg = params.dcnas_features
    archs = load_npy(need(ctx.artifacts("dcnas_sample") / "archs.npy", "dcnas_sample"))
    _, strategy, _ = restored(params, ctx)
    checkpoints = same_supernet(strategy, pick_epochs(pretrain_checkpoints(ctx), cfg.epochs), "dcnas_features.epochs")
    supernet = strategy.supernet
    start, cpu_start = time.perf_counter(), time.process_time()
    info: dict[str, Any] = {"method": cfg.method, "epochs": [e for e, _ in checkpoints], "bn": cfg.bn}
    if cfg.method == "params":
        features = extract_param_features(supernets(strategy, checkpoints), archs, progress=ctx.progress,
                                          num_epochs=len(checkpoints))
    else:
        shape = ctx.data_info.input_shape
        chunk = plan_chunk_size(supernet, archs, shape, ctx.device, cfg.memory_mb, cfg.probe_batch_size)
        probe = make_loader(ctx.splits()["probe"], chunk, shuffle=False)
        trie = supernet_trie(supernet, archs)
        threads = params.runtime.threads or threads_for_chunk(supernet, archs, shape, ctx.device, chunk,
                                                              torch.get_num_threads())
        info.update(chunk_size=chunk, probe_images=len(ctx.splits()["probe"]), trie_nodes=trie.total_nodes,
                    naive_nodes=trie.naive_nodes, threads=threads)
        with torch_threads(threads):
            features = extract_output_features(supernets(strategy, checkpoints), archs, probe, ctx.device, cfg.bn,
                                               progress=ctx.progress, num_epochs=len(checkpoints))
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
