"""Search-step time and memory of every cell strategy on the same proxy
network and batch (8x8 digits), and PC-DARTS's memory against DARTS.

Each strategy is measured in its own process (peak RSS is per process):
- ``step_s``: mean wall time of one search step: what one batch of the
  strategy's ``train_epoch`` runs (:func:`search_step`; DARTS: alpha step
  + weight step; StacNAS's one-level stages: one step updating both);
- ``activation_mb``: bytes autograd keeps for backward during a step
  (saved tensors, deduplicated by storage; the larger of the step's
  forwards): the memory PC-DARTS and GDAS cut, device independent;
- ``rss_step_mb``: growth of the process's peak RSS over the steps
  (on CUDA also ``cuda_peak_mb``, torch.cuda.max_memory_allocated).
Strategies are built by ``create_strategy`` with their own defaults except
the proxy network's size and batch and no warm-up (alpha is updated from
the first step). Before measuring, the strategy trains the epochs up to
and including the measured one on the two benchmark batches (its own
``train_epoch``: the warm-up, and for StacNAS the way into a stage).
Rows:
- the DARTS family on the cell space (op set ``darts``);
- ``stacnas_stage1`` / ``stacnas_stage2``: StacNAS's two search stages
  (appendix A's published groups of S1, one-level), both on the proxy's
  ``cells`` (the paper's stage 2 is deeper: its cost grows about linearly
  with the cells); stage 1 mixes ``none`` + the 4 key operators, stage 2
  ``none`` + the activated group's members on each edge;
- ``dnas_cam`` / ``dnas_cam_iam`` / ``dnas_cam_full``: DNAS-CAM on the
  global cell space of ``cells`` cells (partial channels 1/4, skip dropout
  0.2 and the zero-one loss, as its defaults), one row per
  parameterisation of psi.
Ratios are against first-order DARTS measured in the same run.
torch uses ``BENCH_THREADS`` threads (default 1: on a shared 2-core machine
more threads make tiny convolutions many times slower, not faster).

Usage: python bench/bench_darts.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Row:
    """One row: ``strategy`` on ``space`` with ``overrides``, its search step
    measured in epoch ``epoch`` (StacNAS with one epoch per phase and
    published groups: epoch 0 is stage 1, epoch 1 stage 2)."""

    label: str
    strategy: str
    overrides: dict = field(default_factory=dict)
    space: str = "cell"
    epoch: int = 0


STACNAS = {"clustering": "published", "epochs": 1, "zeta_iterations": 1, "zeta_batches": 2}
STRATEGIES = [Row("darts", "darts"), Row("darts_2nd", "darts", {"order": 2}), Row("pc_darts", "pc_darts"),
              Row("p_darts", "p_darts"), Row("gdas", "gdas"), Row("snas", "snas"),
              Row("stacnas_stage1", "stacnas", STACNAS, epoch=0), Row("stacnas_stage2", "stacnas", STACNAS, epoch=1),
              Row("dnas_cam", "dnas_cam", {"parameterisation": "cam"}, "global_cell"),
              Row("dnas_cam_iam", "dnas_cam", {"parameterisation": "iam"}, "global_cell"),
              Row("dnas_cam_full", "dnas_cam", {"parameterisation": "full"}, "global_cell")]
ROWS = {row.label: row for row in STRATEGIES}
CAM_AND_STACNAS = ("stacnas_stage1", "stacnas_stage2", "dnas_cam", "dnas_cam_iam", "dnas_cam_full")
FULL = {"cells": 5, "init_channels": 8, "batch_size": 32, "steps": 4}
QUICK = {"cells": 3, "init_channels": 4, "batch_size": 16, "steps": 2}


def _saved_bytes(fn) -> tuple[float, int]:
    """Run ``fn`` recording the storages autograd saves; (seconds, bytes)."""
    import torch

    storages: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return time.perf_counter() - start, sum(storages.values())


def strategy_params(name: str, setting: dict, overrides: dict) -> dict:
    """``strategies.<name>`` for the benchmark: the strategy's own defaults
    with the proxy network's size and batch of ``setting`` (P-DARTS: one
    stage of that many cells, no skip dropout; StacNAS: every phase that
    many cells; DNAS-CAM: the depth is the space's), no warm-up, and
    ``overrides``."""
    size = {"init_channels": setting["init_channels"], "batch_size": setting["batch_size"], "warmup_epochs": 0}
    cells = setting["cells"]
    if name == "p_darts":
        size.update(pdarts_cells=[cells], pdarts_ops_kept=[], skip_dropout=[0.0])
    elif name == "stacnas":
        size.update(cluster_cells=cells, stage1_cells=cells, stage2_cells=cells)
    elif name != "dnas_cam":
        size["cells"] = cells
    return {**size, **overrides}


def space_params(row: Row, setting: dict) -> dict:
    """``spaces.<row.space>``: op set ``darts``; the global cell space has
    the proxy's depth."""
    return {"op_set": "darts", **({"cells": setting["cells"]} if row.space == "global_cell" else {})}


def search_step(strategy: Any, epoch: int, xw, yw, xa, ya) -> list[Callable[[], Any]]:
    """What one batch of ``strategy.train_epoch(epoch)`` runs
    (DartsStrategy.train_epoch): the alpha step when the epoch updates
    alpha, then the weight step (StacNAS's one-level stages update no alpha
    separately: their weight step updates w and alpha together)."""
    steps = [lambda: strategy._weight_step(xw, yw)]
    if strategy.updates_arch(epoch):
        steps.insert(0, lambda: strategy._arch_step(xw, yw, xa, ya))
    return steps


def measure(label: str, quick: bool) -> dict:
    """One strategy's numbers (runs in the current process)."""
    import torch
    from sklearn.datasets import load_digits
    from torch.utils.data import DataLoader, TensorDataset

    from nas_core.spaces import make_space
    from nas_core.strategies import SearchData, create_strategy

    setting = QUICK if quick else FULL
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    row = ROWS[label]
    torch.manual_seed(0)
    x, y = load_digits(return_X_y=True)
    b = setting["batch_size"]
    x = torch.tensor(x[:2 * b] / 8.0 - 1.0, dtype=torch.float32).view(-1, 1, 8, 8)
    y = torch.tensor(y[:2 * b])
    loader = DataLoader(TensorDataset(x, y), batch_size=b)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    space = make_space(row.space, space_params(row, setting), (1, 8, 8), 10)
    strategy = create_strategy(row.strategy, space, strategy_params(row.strategy, setting, row.overrides), device,
                               seed=0)
    data = SearchData(loader, loader)
    strategy.setup(data)
    for epoch in range(row.epoch + 1):  # warm-up, and the way into the measured epoch (StacNAS: its stage)
        strategy.train_epoch(epoch, data)
    (xw, yw), (xa, ya) = [(t[0].to(device), t[1].to(device)) for t in loader]
    step = search_step(strategy, row.epoch, xw, yw, xa, ya)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, saved = [], []
    for _ in range(setting["steps"]):
        measured = [_saved_bytes(fn) for fn in step]
        times.append(sum(t for t, _ in measured))
        saved.append(max(s for _, s in measured))
    out = {"strategy": label, "step_s": sum(times) / len(times), "activation_mb": max(saved) / 2**20,
           "rss_step_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_before}
    if device.type == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def _measure_in_subprocess(label: str, quick: bool) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--measure", label] + (["--quick"] if quick else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"measuring {label} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> dict:
    rows = [_measure_in_subprocess(row.label, quick) for row in STRATEGIES]
    base = next(r for r in rows if r["strategy"] == "darts")
    for row in rows:
        row["time_vs_darts"] = row["step_s"] / base["step_s"]
        row["activation_vs_darts"] = row["activation_mb"] / base["activation_mb"]
    by = {r["strategy"]: r for r in rows}
    setting = QUICK if quick else FULL
    summary = {"setting": setting, "threads": int(os.environ.get("BENCH_THREADS", "1")),
               "pc_darts_activation_ratio": by["pc_darts"]["activation_vs_darts"],
               "pc_darts_rss_ratio": by["pc_darts"]["rss_step_mb"] / max(base["rss_step_mb"], 1e-9),
               "gdas_activation_ratio": by["gdas"]["activation_vs_darts"],
               "second_order_time_ratio": by["darts_2nd"]["time_vs_darts"],
               **{f"{label}_time_ratio": by[label]["time_vs_darts"] for label in CAM_AND_STACNAS},
               **{f"{label}_activation_ratio": by[label]["activation_vs_darts"] for label in CAM_AND_STACNAS}}
    return {"name": "darts", "rows": rows, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.quick)))
        return
    sys.path.insert(0, str(HERE))
    from run import report

    report(run(args.quick))


if __name__ == "__main__":
    main()
