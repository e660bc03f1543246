"""Search-step time and memory of every cell strategy on the same proxy
network and batch (8x8 digits), and PC-DARTS's memory against DARTS.

Each strategy is measured in its own process (peak RSS is per process):
- ``step_s``: mean wall time of one search step (alpha step + weight step),
  after one warm-up step;
- ``activation_mb``: bytes autograd keeps for backward during a step
  (saved tensors, deduplicated by storage; the larger of the two steps'
  forwards): the memory PC-DARTS and GDAS cut, device independent;
- ``rss_step_mb``: growth of the process's peak RSS over the steps
  (on CUDA also ``cuda_peak_mb``, torch.cuda.max_memory_allocated).
Strategies are built by ``create_strategy`` on the cell space (op set
``darts``) with their own defaults except the proxy network's size and
batch. Ratios are against first-order DARTS measured in the same run.
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
from pathlib import Path

HERE = Path(__file__).resolve().parent
STRATEGIES = [("darts", {}), ("darts_2nd", {"order": 2}), ("pc_darts", {}), ("p_darts", {}),
              ("gdas", {}), ("snas", {})]
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
    stage of that many cells, no skip dropout) and ``overrides``."""
    size = {"init_channels": setting["init_channels"], "batch_size": setting["batch_size"]}
    if name == "p_darts":
        size.update(pdarts_cells=[setting["cells"]], pdarts_ops_kept=[], skip_dropout=[0.0])
    else:
        size["cells"] = setting["cells"]
    return {**size, **overrides}


def measure(label: str, quick: bool) -> dict:
    """One strategy's numbers (runs in the current process)."""
    import torch
    from sklearn.datasets import load_digits
    from torch.utils.data import DataLoader, TensorDataset

    from nas_core.spaces import make_space
    from nas_core.strategies import SearchData, create_strategy

    setting = QUICK if quick else FULL
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    name, overrides = label.removesuffix("_2nd"), dict(STRATEGIES)[label]
    torch.manual_seed(0)
    x, y = load_digits(return_X_y=True)
    b = setting["batch_size"]
    x = torch.tensor(x[:2 * b] / 8.0 - 1.0, dtype=torch.float32).view(-1, 1, 8, 8)
    y = torch.tensor(y[:2 * b])
    loader = DataLoader(TensorDataset(x, y), batch_size=b)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    space = make_space("cell", {"op_set": "darts"}, (1, 8, 8), 10)
    strategy = create_strategy(name, space, strategy_params(name, setting, overrides), device, seed=0)
    strategy.setup(SearchData(loader, loader))
    strategy.before_epoch(0)
    (xw, yw), (xa, ya) = [(t[0].to(device), t[1].to(device)) for t in loader]
    step = [lambda: strategy._arch_step(xw, yw, xa, ya), lambda: strategy._weight_step(xw, yw)]
    for fn in step:  # warm-up
        fn()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, saved = [], []
    for _ in range(setting["steps"]):
        measured = [_saved_bytes(fn) for fn in step]
        times.append(sum(t for t, _ in measured))
        saved.append(max(s for _, s in measured))
    row = {"strategy": label, "step_s": sum(times) / len(times), "activation_mb": max(saved) / 2**20,
           "rss_step_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_before}
    if device.type == "cuda":
        row["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return row


def _measure_in_subprocess(label: str, quick: bool) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--measure", label] + (["--quick"] if quick else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"measuring {label} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> dict:
    rows = [_measure_in_subprocess(label, quick) for label, _ in STRATEGIES]
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
               "second_order_time_ratio": by["darts_2nd"]["time_vs_darts"]}
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
