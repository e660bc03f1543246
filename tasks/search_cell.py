"""Search on the DARTS cell space (strategies darts, pc_darts, p_darts,
gdas, snas): the part of the search stage for strategies whose class has
``space_kind == "cell"``. ``tasks/search.py`` calls
:func:`run_cell_search` for them.

Reads: the subset stage's splits (``train_w`` for weights, ``train_a`` for
alpha, ``val`` for reporting). Writes into ``ctx.out``:
``genotype.json``, ``probabilities_normal.csv`` / ``probabilities_reduce.csv``
(rows: edges ``node<-input``, columns: ops), ``edge_weights.csv``,
``history.csv`` (per-epoch metrics), ``cell_normal.png`` / ``cell_reduce.png``,
``probabilities.png`` and ``final_network/`` (the genotype's deeper/wider
network, initial weights, re-loadable with
``nas_core.supernet.cell.load_exported``). Per-epoch supernet checkpoints
(``epoch_XXX.pt``: the strategy state, with the supernet weights and alpha
the DC-NAS cell features read) go to ``checkpoint_dir``; a killed run
resumes from the newest one made with the same settings.
"""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any, Optional

import numpy as np
from torch.utils.data import DataLoader

from nas_core.config import Params, section_dict
from nas_core.io import atomic_path, write_history, write_json
from nas_core.spaces.cell import EDGES, CellSpace, plot_cell_probabilities, render_cell
from nas_core.strategies import STRATEGIES, SearchData, SearchResult
from nas_core.strategies.data_parallel import data_parallel, shard_search_data  # torchrun: flows/distributed.py
from nas_core.supernet.cell import CellNetwork, export_network
from nas_core.train.checkpoint import run_resumable

SECTIONS = ("search",)
TIMING_KEYS = ("step_time_s", "peak_rss_mb", "cuda_peak_mb")


def is_cell_strategy(name: str) -> bool:
    return getattr(STRATEGIES.get(name), "space_kind", None) == "cell"


def cell_space(params: Params, ctx: Any) -> CellSpace:
    return CellSpace(params.search.cell.op_set, int(ctx.data_info.input_shape[0]), int(ctx.data_info.num_classes))


def cell_search_data(params: Params, ctx: Any) -> SearchData:
    """Shuffling draws from the global torch RNG, which the strategy's state
    saves and restores, so a resumed run sees the same batches."""
    splits, batch = ctx.splits(), params.search.cell.batch_size
    workers = params.data.num_workers
    return SearchData(DataLoader(splits["train_w"], batch_size=batch, shuffle=True, num_workers=workers),
                      DataLoader(splits["train_a"], batch_size=batch, shuffle=True, num_workers=workers),
                      DataLoader(splits["val"], batch_size=batch, num_workers=workers))


def fingerprint(params: Params) -> str:
    """Digest of the settings that shape the search (resume guard)."""
    keys = {s: section_dict(params, s) for s in ("data", "subset", "search")}
    keys["seed"] = params.runtime.seed
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()


class _LogEpoch:
    def __init__(self, ctx: Any, bar: Any) -> None:
        self.ctx, self.bar = ctx, bar

    def on_epoch_end(self, strategy: Any, epoch: int, metrics: dict[str, float]) -> None:
        self.ctx.log.log_metrics(metrics, step=epoch)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{metrics['loss']:.3f}", skip_normal=int(metrics["skip_normal"]))


def run_cell_search(params: Params, ctx: Any, checkpoint_dir: Optional[Path] = None) -> dict[str, float]:
    cfg, name = params.search.cell, params.search.strategy
    space = cell_space(params, ctx)
    strategy = data_parallel(STRATEGIES.get(name))(space, cfg, ctx.device, params.runtime.seed)
    ctx.log.set_tags({"search.space": "cell", "search.op_set": cfg.op_set})
    with ctx.progress(total=strategy.num_epochs(), desc=f"{name} epochs") as bar:
        data = shard_search_data(cell_search_data(params, ctx))  # per-rank loaders under torchrun
        result = run_resumable(strategy, data, checkpoint_dir or ctx.out / "checkpoints", fingerprint(params),
                               callbacks=[_LogEpoch(ctx, bar)])
    net = write_cell_result(result, ctx.out, space, cfg.final_cells, cfg.final_channels, name)
    for path in sorted(ctx.out.glob("*.png")) + sorted(ctx.out.glob("*.csv")) + [ctx.out / "genotype.json"]:
        ctx.log.log_artifact(path, "search")
    last = result.history[-1]
    metrics = {k: float(v) for k, v in last.items() if k not in TIMING_KEYS}
    metrics.update(final_params=float(sum(p.numel() for p in net.parameters())),
                   peak_rss_mb=max(h.get("peak_rss_mb", 0.0) for h in result.history),
                   step_time_s=float(np.mean([h["step_time_s"] for h in result.history])))
    return metrics


def write_cell_result(result: SearchResult, out: Path, space: CellSpace, final_cells: int,
                      final_channels: int, strategy: str) -> CellNetwork:
    """All files of the cell search (see module docstring); returns the
    exported final network."""
    g = result.genotype
    write_json(out / "genotype.json", {**g.to_dict(), "strategy": strategy, "op_set": space.op_set,
                                       "op_names": list(result.op_names)})
    for kind in ("normal", "reduce"):
        _write_table(out / f"probabilities_{kind}.csv", result.probabilities[kind], result.op_names)
        render_cell(getattr(g, kind), getattr(g, f"{kind}_concat"), out / f"cell_{kind}.png",
                    f"{strategy}: {kind} cell")
    edges = result.extras.get("edge_weights", {})
    if edges:
        _write_table(out / "edge_weights.csv", np.stack([edges["normal"], edges["reduce"]], axis=1),
                     ["normal", "reduce"])
    write_history(out / "history.csv", result.history)
    fig = plot_cell_probabilities(result.probabilities, result.op_names, title=strategy)
    with atomic_path(out / "probabilities.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    fig.clear()
    net = CellNetwork(g, space.input_channels, space.num_classes, final_channels, final_cells)
    export_network(net, out / "final_network", extra={"strategy": strategy, "op_set": space.op_set})
    return net


def _write_table(path: Path, table: np.ndarray, columns: list[str]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["edge", *columns])
        for (node, src), row in zip(EDGES, np.asarray(table)):
            writer.writerow([f"{node}<-{src}", *(f"{v:.6g}" for v in row)])


