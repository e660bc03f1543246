"""dcnas_features: the s × L × η feature tensor of the sampled architectures
(Eq. 7 by default, Eq. 6 with ``method: params``; nas_core.dcnas.features).
Outputs features.npy (float32, rows aligned with dcnas_sample/archs.npy) and
summary.json (epochs used, chunk size, trie size, timing). For a cell
``search.strategy``: Eq. 7 per cell output from the search stage's
checkpoints (tasks.dcnas_cell.run_cell_features)."""
from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator

import numpy as np
import torch

from nas_core.config import Params
from nas_core.dcnas.features import (build_trie, extract_output_features, extract_param_features, plan_chunk_size,
                                     threads_for_chunk)
from nas_core.io import save_npy, write_json
from nas_core.supernet.layerwise import LayerwiseSupernet
from nas_core.train.loop import make_loader
from tasks.dcnas_cell import run_cell_features
from tasks.dcnas_io import chosen_checkpoints, layerwise_space, load_samples, model_states
from tasks.search_cell import is_cell_strategy

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
    if is_cell_strategy(params.search.strategy):
        return run_cell_features(params, ctx)
    return run_layerwise(params, ctx)


def run_layerwise(params: Params, ctx: Any) -> dict[str, float]:
    cfg = params.dcnas_features
    archs, _, _ = load_samples(ctx)
    checkpoints = chosen_checkpoints(ctx, cfg.epochs)
    model = LayerwiseSupernet(layerwise_space(params, ctx))
    start, cpu_start = time.perf_counter(), time.process_time()
    info: dict[str, Any] = {"method": cfg.method, "epochs": [e for e, _ in checkpoints], "bn": cfg.bn}
    if cfg.method == "params":
        features = extract_param_features(model, model_states(checkpoints), archs, progress=ctx.progress,
                                          num_epochs=len(checkpoints))
    else:
        chunk = plan_chunk_size(model, ctx.data_info.input_shape, ctx.device, cfg.memory_mb, cfg.probe_batch_size)
        probe = make_loader(ctx.splits()["probe"], chunk, shuffle=False)
        trie = build_trie(archs)
        info.update(chunk_size=chunk, probe_images=len(ctx.splits()["probe"]), trie_nodes=trie.total_nodes,
                    naive_nodes=int(archs.size))
        threads = params.runtime.threads or threads_for_chunk(model, ctx.data_info.input_shape, ctx.device, chunk,
                                                              torch.get_num_threads())
        info["threads"] = threads
        with torch_threads(threads):
            features = extract_output_features(model, model_states(checkpoints), archs, probe, ctx.device, cfg.bn,
                                               progress=ctx.progress, num_epochs=len(checkpoints))
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    assert np.isfinite(features).all(), "features contain NaN/inf"
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
