"""pretrain stage: FBNet supernet pre-training on the subset's splits
(nas_core.strategies.fbnet), resumable after a kill.

The stage is persistent (``ctx.out`` is the real ``artifacts/pretrain``), so
every file is written atomically here. Outputs:

* ``checkpoints/epoch_XXX.pt`` (+ ``.sha256``): one per epoch, the full
  strategy state (``model`` = supernet weights with ``theta``); DC-NAS reads
  these. A rerun resumes from the newest good one made with the same
  settings (:func:`fingerprint`) and removes ones made with other settings.
* ``latency.json``: the latency lookup table measured on ``ctx.device``;
  reused on reruns while the space and device stay the same, so a resumed
  run optimises against the same numbers.
* ``history.csv`` (per-epoch metrics) and ``theta_history.npy``
  (epochs x layers x ops), rewritten after every epoch. At the end the
  history is also copied to ``metrics/pretrain_history.csv`` (a DVC plot:
  a plot cannot sit inside the persistent output directory).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from nas_core.config import Params, section_dict
from nas_core.cost import LatencyTable, measure_latency_table
from nas_core.io import save_npy, sha256_file, write_history
from nas_core.spaces import LayerwiseSpace, make_space
from nas_core.strategies import SearchData
from nas_core.strategies.fbnet import FBNetStrategy
from nas_core.train import make_loader, run_resumable
from nas_core.strategies.data_parallel import data_parallel, shard_search_data  # torchrun: flows/distributed.py

SECTIONS = ("pretrain",)
PERSISTENT = True
LATENCY_FILE = "latency.json"
CHECKPOINTS = "checkpoints"


def layerwise_space(params: Params, ctx: Any) -> LayerwiseSpace:
    info = ctx.data_info
    return make_space(params.pretrain.space, params.pretrain.preset, info.input_shape, info.num_classes)


def search_data(params: Params, ctx: Any, batch_size: int) -> SearchData:
    """Loaders over the subset's splits; shuffling uses each loader's own
    generator, which the strategy reseeds per epoch."""
    splits, seed, workers = ctx.splits(), params.runtime.seed, params.data.num_workers
    arch_batch = params.pretrain.theta_batch_size or batch_size
    return SearchData(make_loader(splits["train_w"], batch_size, True, seed, workers),
                      make_loader(splits["train_a"], arch_batch, True, seed + 1, workers),
                      make_loader(splits["val"], batch_size, False, seed, workers))


def latency_table(params: Params, ctx: Any, space: LayerwiseSpace) -> LatencyTable:
    """The stored table when it fits this space and device, else a new
    measurement (saved before training starts)."""
    path = ctx.out / LATENCY_FILE
    if path.is_file():
        try:
            table = LatencyTable.load(path)
            table.check(space)
            if table.device == str(ctx.device):
                return table
        except ValueError:  # unreadable or for another space: measure again
            pass
    table = measure_latency_table(space, ctx.device, params.pretrain.latency_repeats, progress=ctx.progress)
    table.save(path)
    return table


def fingerprint(params: Params, latency_path: Path) -> str:
    """Digest of everything that shapes training (the resume guard)."""
    keys: dict[str, Any] = {s: section_dict(params, s) for s in ("data", "subset", "pretrain")}
    keys["seed"] = params.runtime.seed
    keys["latency"] = sha256_file(latency_path)
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()


class EpochOutputs:
    """After each epoch: metrics to MLflow, history.csv, theta_history.npy,
    the epoch progress bar."""

    def __init__(self, ctx: Any, bar: Any) -> None:
        self.ctx, self.bar = ctx, bar
        self.logged: set[int] = set()

    def on_epoch_end(self, strategy: FBNetStrategy, epoch: int, metrics: dict[str, float]) -> None:
        self.ctx.log.log_metrics(metrics, step=epoch)
        self.logged.add(epoch)
        write_history(self.ctx.out / "history.csv", strategy.history)
        save_npy(self.ctx.out / "theta_history.npy", strategy.theta_history_array())
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{metrics['loss']:.3f}", acc=f"{metrics['acc']:.3f}",
                             tau=f"{metrics['temperature']:.2f}")

    def log_earlier(self, history: list[dict[str, float]]) -> None:
        """Epochs finished by an earlier (killed) run: log them here too so
        this run shows whole curves."""
        for epoch, row in enumerate(history, start=1):
            if epoch not in self.logged:
                self.ctx.log.log_metrics(row, step=epoch)


def run(params: Params, ctx: Any) -> dict[str, float]:
    cfg = params.pretrain
    space = layerwise_space(params, ctx)
    latency = latency_table(params, ctx, space)
    strategy = data_parallel(FBNetStrategy)(space, cfg, ctx.device, params.runtime.seed, latency=latency)
    strategy.progress = ctx.progress
    ctx.log.set_tags({"nasflow.space": f"{space.name}/{space.preset}", "nasflow.space_size": f"{space.size:.3g}"})
    with ctx.progress(total=cfg.epochs, desc="pretrain epochs") as bar:
        outputs = EpochOutputs(ctx, bar)
        data = shard_search_data(search_data(params, ctx, cfg.batch_size))  # per-rank loaders under torchrun
        result = run_resumable(strategy, data, ctx.out / CHECKPOINTS,
                               fingerprint(params, ctx.out / LATENCY_FILE), [outputs])
    outputs.log_earlier(result.history)
    write_history(ctx.out / "history.csv", result.history)
    write_history(ctx.root / "metrics" / "pretrain_history.csv", result.history)
    save_npy(ctx.out / "theta_history.npy", result.extras["theta_history"])
    for name in (LATENCY_FILE, "history.csv", "theta_history.npy"):
        ctx.log.log_artifact(ctx.out / name, "pretrain")
    last = result.history[-1]
    return {"epochs": float(len(result.history)), "loss": last["loss"], "acc": last["acc"],
            "val_acc": last.get("val_acc", float("nan")), "theta_entropy": last["theta_entropy"],
            "expected_latency_ms": last["expected_latency_ms"],
            "latency_table_mean_ms": float(np.mean(latency.ms))}
