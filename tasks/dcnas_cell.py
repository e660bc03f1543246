"""DC-NAS stages on the DARTS cell space (when ``search.strategy`` is a cell
strategy): the cell counterparts of dcnas_sample / dcnas_features, the
Eq. 9 scoring of dcnas_cluster and the retrain stage's space parts.
``tasks/dcnas_*.py``, ``tasks/evaluate.py`` and ``tasks/retrain.py`` pick
these once per run with ``tasks.search_cell.is_cell_strategy``.

Inputs: the search stage's ``genotype.json`` (op names), probability CSVs,
``edge_weights.csv`` and per-epoch ``checkpoints/`` (strategy states).
Outputs use the layer-wise file names, so clustering and selection read
them unchanged: dcnas_sample writes ``archs.npy`` (u, 32) cell rows
(nas_core.dcnas.cell_paths), ``counts.npy``, ``probs.npy`` (2, 14, n_ops:
normal, reduce), ``edge_weights.npy`` (2, 14), ``summary.json``;
dcnas_features writes ``features.npy`` (u, cells, η) and ``summary.json``.
A cluster candidate carries its ``genotype`` (CellGenotype dict) and
``ops``, one readable ``"<kind> <node><-<input> <op>"`` string per kept edge.

Retrain (Eq. 10): the baseline is the search stage's derived genotype; a
finalist's cost is measured on its final network: ``flops`` =
multiply-adds (torch's FlopCounterMode / 2, the layer-wise convention),
``params`` = learnable scalars, ``latency_ms`` = min over 5 repeats of
10 batch-1 forwards on the stage's device (nas_core.cost.latency.time_module).
N* is exported with ``nas_core.supernet.cell.export_network`` (reload:
``load_exported(model_dir)``).
"""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from nas_core.config import Params, ParamsError
from nas_core.cost.latency import time_module
from nas_core.data import DataError
from nas_core.dcnas.cell_paths import (KINDS, cell_arch_scores, cell_output_features, row_to_genotype,
                                       sample_cell_archs)
from nas_core.io import load_npy, save_npy, write_json
from nas_core.spaces.cell import NUM_INPUTS, CellGenotype
from nas_core.strategies import STRATEGIES
from nas_core.supernet.cell import CellNetwork, export_network
from nas_core.train.checkpoint import list_checkpoints, load_checkpoint
from tasks.dcnas_io import need, pick_epochs
from tasks.dcnas_train import RetrainSpace
from tasks.search_cell import cell_space

SEARCH_CHECKPOINTS = "checkpoints"


def _need(path: Path) -> Path:
    if not path.exists():
        raise DataError(f"{path}: missing; run the search stage with a cell strategy first "
                        "(`nasflow stage search`)")
    return path


def read_table(path: Path) -> tuple[list[str], np.ndarray]:
    """(column names, values) of a table written by tasks/search_cell.py."""
    with open(_need(path), newline="") as f:
        rows = list(csv.reader(f))
    return rows[0][1:], np.array([[float(v) for v in row[1:]] for row in rows[1:]])


def cell_search_tables(ctx: Any) -> tuple[list[str], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(op names, probabilities per kind (14, n_ops), edge weights per kind (14,))."""
    out = ctx.artifacts("search")
    op_names = json.loads(_need(out / "genotype.json").read_text())["op_names"]
    probs = {kind: read_table(out / f"probabilities_{kind}.csv")[1] for kind in KINDS}
    edges_file = out / "edge_weights.csv"
    edges = {k: np.ones(14) for k in KINDS}
    if edges_file.exists():
        names, table = read_table(edges_file)
        edges = {k: table[:, names.index(k)] for k in KINDS}
    return op_names, probs, edges


def run_cell_sample(params: Params, ctx: Any) -> dict[str, float]:
    op_names, probs, edges = cell_search_tables(ctx)
    result = sample_cell_archs(probs, op_names, params.dcnas_sample.num_samples, params.runtime.seed, edges)
    save_npy(ctx.out / "archs.npy", result.archs)
    save_npy(ctx.out / "counts.npy", result.counts)
    save_npy(ctx.out / "probs.npy", np.stack([probs[k] for k in KINDS]))
    save_npy(ctx.out / "edge_weights.npy", np.stack([edges[k] for k in KINDS]))
    scores = cell_arch_scores(result.archs, probs, edges)
    summary = {"space": "cell", "op_names": op_names, "num_drawn": result.num_drawn,
               "num_unique": result.num_unique, "max_count": int(result.counts.max())}
    write_json(ctx.out / "summary.json", summary)
    ctx.log.log_dict(summary, "dcnas_sample/summary.json")
    return {"num_drawn": result.num_drawn, "num_unique": result.num_unique,
            "duplicate_fraction": 1.0 - result.num_unique / result.num_drawn,
            "max_count": int(result.counts.max()), "best_eq9_score": float(scores.max())}


def search_checkpoints(ctx: Any, epochs: list[int] | None) -> list[tuple[int, Path]]:
    """The search stage's checkpoints of ``dcnas_features.epochs`` (None: all)."""
    found = list_checkpoints(ctx.artifacts("search") / SEARCH_CHECKPOINTS)
    if not found:
        _need(ctx.artifacts("search") / SEARCH_CHECKPOINTS / "epoch_001.pt")
    return pick_epochs(found, epochs, "search checkpoint")


def rebuild_strategy(params: Params, ctx: Any, state: dict[str, Any]) -> Any:
    """The search strategy with ``state`` loaded (its supernet has the
    checkpoint's shape: cells, partial channels, P-DARTS's per-edge ops)."""
    strategy = STRATEGIES.get(params.search.strategy)(cell_space(params, ctx), params.search.cell, ctx.device,
                                                      params.runtime.seed)
    strategy.setup(None)
    strategy.load_state_dict(state)
    return strategy


def _same_stage(checkpoints: list[tuple[int, Path]]) -> list[tuple[int, Path]]:
    """P-DARTS rebuilds its supernet per stage: keep the last stage's epochs."""
    stages = [load_checkpoint(p).get("stage", 0) for _, p in checkpoints]
    kept = [c for c, s in zip(checkpoints, stages) if s == stages[-1]]
    if len(kept) < 2:
        raise DataError(f"search checkpoints {[e for e, _ in checkpoints]}: fewer than 2 in the last P-DARTS stage; "
                        "Eq. 7 needs two epochs of the same supernet (set dcnas_features.epochs)")
    return kept


def _states(checkpoints: list[tuple[int, Path]]) -> Iterator[dict[str, torch.Tensor]]:
    for _, path in checkpoints:
        yield load_checkpoint(path)["net"]


def run_cell_features(params: Params, ctx: Any) -> dict[str, float]:
    cfg = params.dcnas_features
    if cfg.method != "output":
        raise ParamsError(f"dcnas_features.method = {cfg.method!r}: the cell space supports 'output' (Eq. 7)")
    archs = load_npy(_need(ctx.artifacts("dcnas_sample") / "archs.npy"))
    op_names = json.loads(_need(ctx.artifacts("dcnas_sample") / "summary.json").read_text())["op_names"]
    checkpoints = _same_stage(search_checkpoints(ctx, cfg.epochs))
    strategy = rebuild_strategy(params, ctx, load_checkpoint(checkpoints[-1][1]))
    probe = DataLoader(ctx.splits()["probe"], batch_size=cfg.probe_batch_size, shuffle=False)
    start = time.perf_counter()
    features = cell_output_features(strategy.net, _states(checkpoints), archs, op_names, probe, ctx.device,
                                    cfg.bn, progress=ctx.progress, edge_ops=strategy.edge_ops)
    seconds = time.perf_counter() - start
    if not np.isfinite(features).all():
        raise FloatingPointError("cell features contain NaN/inf")
    save_npy(ctx.out / "features.npy", features)
    info = {"space": "cell", "method": "output", "epochs": [e for e, _ in checkpoints], "bn": cfg.bn,
            "shape": list(features.shape), "seconds": seconds}
    write_json(ctx.out / "summary.json", info)
    ctx.log.log_dict(info, "dcnas_features/summary.json")
    return {"num_archs": features.shape[0], "num_layers": features.shape[1], "num_epochs": features.shape[2],
            "seconds": seconds, "archs_per_s": features.shape[0] / max(seconds, 1e-9),
            "feature_mean": float(features.mean()), "feature_std": float(features.std())}


def cell_network(params: Params, ctx: Any, row: np.ndarray, op_names: list[str]) -> CellNetwork:
    """The final (deeper/wider) network of a sampled cell row."""
    return genotype_network(params, ctx, row_to_genotype(row, op_names))


def genotype_network(params: Params, ctx: Any, genotype: CellGenotype) -> CellNetwork:
    """The final (deeper/wider) network of ``genotype`` (search.cell.final_*)."""
    space = cell_space(params, ctx)
    return CellNetwork(genotype, space.input_channels, space.num_classes,
                       params.search.cell.final_channels, params.search.cell.final_cells)


def cell_ops(genotype: CellGenotype) -> list[str]:
    """One ``"<kind> <node><-<input> <op>"`` string per kept edge."""
    return [f"{kind} {NUM_INPUTS + i // NUM_INPUTS}<-{src} {op}"
            for kind in KINDS for i, (op, src) in enumerate(getattr(genotype, kind))]


def cell_candidates(ctx: Any, archs: np.ndarray, probs: np.ndarray, log: bool
                    ) -> tuple[np.ndarray, Callable[[int], dict[str, Any]]]:
    """Eq. 9 scores of the sampled rows (edge weight x op probability
    summed over both cells' kept edges) and row index -> candidate fields."""
    out = ctx.artifacts("dcnas_sample")
    op_names = json.loads(need(out / "summary.json", "dcnas_sample").read_text())["op_names"]
    edges = load_npy(need(out / "edge_weights.npy", "dcnas_sample"))
    scores = cell_arch_scores(archs, dict(zip(KINDS, probs)), dict(zip(KINDS, edges)), log=log)

    def describe(i: int) -> dict[str, Any]:
        genotype = row_to_genotype(archs[i], op_names)
        return {"ops": cell_ops(genotype), "genotype": genotype.to_dict()}

    return scores, describe


def search_genotype(ctx: Any) -> dict[str, Any]:
    """The search stage's derived genotype (the retrain baseline)."""
    path = need(ctx.artifacts("search") / "genotype.json", "search")
    return CellGenotype.from_json(path.read_text()).to_dict()


def cell_cost(net: torch.nn.Module, input_shape: tuple[int, ...], device: torch.device) -> dict[str, Any]:
    """flops (multiply-adds), params and batch-1 latency of ``net`` (module docstring)."""
    x = torch.zeros(1, *input_shape, device=device)
    net = net.to(device).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x)
    return {"flops": counter.get_total_flops() // 2, "params": sum(p.numel() for p in net.parameters()),
            "latency_ms": time_module(net, x, repeats=5)}


def cell_retrain_space(params: Params, ctx: Any) -> RetrainSpace:
    """The retrain stage's parts for the cell space (module docstring)."""
    def network(genotype: dict[str, Any]) -> CellNetwork:
        return genotype_network(params, ctx, CellGenotype.from_dict(genotype))

    def save(model_dir: Path, result: dict[str, Any]) -> None:
        net = network(result["genotype"])
        net.load_state_dict(result["state_dict"])
        export_network(net, model_dir, extra={"strategy": params.search.strategy,
                                              "op_set": params.search.cell.op_set})

    return RetrainSpace(baseline=lambda: search_genotype(ctx),
                        label=lambda g: " | ".join(cell_ops(CellGenotype.from_dict(g))),
                        cost=lambda g: cell_cost(network(g), tuple(ctx.data_info.input_shape), ctx.device),
                        save=save)
