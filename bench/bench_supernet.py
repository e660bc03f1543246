"""Supernet pre-training cost: pipeline overhead, achieved GFLOP/s, memory.

1. ``overhead``: one pass of FBNet's weight phase through the pipeline's
   code (``FBNetStrategy.loss_fn`` + ``nas_core.train.train_one_epoch``:
   progress hook, finite check, metric accumulation) against a bare PyTorch
   loop over the same module, optimiser and batches. Runs alternate and the
   fastest of each is kept. Target: ratio <= 1.05.
2. ``gflops``: FLOPs of one supernet training step per second of the bare
   step, against a large float32 matmul on the same threads (the CPU's
   practical ceiling). A ratio, not an absolute. The forward is counted by
   ``torch.utils.flop_counter`` (exact, checked in tests); a training step
   is taken as 3x the forward (backward = grad wrt inputs + wrt weights).
   The counter's own backward count is not used: it prices the backward of
   grouped/depthwise convolutions as dense ones (66x too high for a
   64-channel depthwise 3x3).
3. ``memory``: peak RSS (VmHWM, reset just before training; else
   ``ru_maxrss``) of a fresh process running
   one pre-training epoch (weights pass + θ pass) of the default preset
   (digits, batch 64, the default subset sizes), and its growth over the
   process's RSS just before training (imports, data, supernet built).

Threads: ``BENCH_THREADS`` (default 1). ``python bench/bench_supernet.py [--quick]``.
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

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset
from torch.utils.flop_counter import FlopCounterMode

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from nas_core.spaces import make_space  # noqa: E402
from nas_core.spaces.layerwise import flops_latency_table  # noqa: E402
from nas_core.strategies import SearchData, create_strategy  # noqa: E402
from nas_core.strategies.fbnet import FBNetStrategy, fbnet_loss  # noqa: E402
from nas_core.train import make_loader, train_one_epoch  # noqa: E402

SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "cifar": (3, 32, 32)}
BATCH = 64
#: default subset of digits: 1797 images, 20 % test holdout, fraction 0.5, 10 % val, 80/20 w/a
DIGITS_TRAIN_W, DIGITS_TRAIN_A = 517, 130


def threads() -> int:
    return int(os.environ.get("BENCH_THREADS", "1"))


def strategy_for(preset: str, n_w: int, n_a: int = BATCH, **settings) -> tuple[FBNetStrategy, SearchData]:
    """FBNet built by ``create_strategy`` on the layer-wise space of
    ``preset`` (FBNet's published settings, batch ``BATCH``, ``settings``
    on top) with the analytic latency table (no timing noise), and loaders
    over seeded random images of the preset's shape."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    shape = SHAPES[preset]
    def make(n: int) -> TensorDataset:
        return TensorDataset(torch.randn(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g))

    data = SearchData(make_loader(make(n_w), BATCH, True), make_loader(make(n_a), BATCH, True))
    space = make_space("layerwise", {"preset": preset}, shape, 10)
    space = space.with_latency(flops_latency_table(space))
    strategy = create_strategy("fbnet", space, {"batch_size": BATCH, **settings}, "cpu", 0)
    strategy.setup(data)
    strategy.progress = None
    return strategy, data


def bare_pass(s: FBNetStrategy, data: SearchData, tau: float) -> None:
    """The same weight phase written as a plain PyTorch loop."""
    net, opt, table, c = s.supernet, s.w_optimizer, s.lat_table, s.config
    net.train()
    for x, y in data.train_w:
        opt.zero_grad(set_to_none=True)
        mask = net.sample_mask(tau)
        loss = fbnet_loss(F.cross_entropy(net.forward_weighted(x, mask), y), (mask * table).sum(), c.alpha, c.beta)
        loss.backward()
        opt.step()


def pipeline_pass(s: FBNetStrategy, data: SearchData, tau: float) -> None:
    train_one_epoch(s.supernet, data.train_w, s.w_optimizer, s.device, 0, loss=s.loss_fn(tau), progress=s.progress)


def fastest(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def overhead_row(preset: str, steps: int, repeats: int) -> dict:
    s, data = strategy_for(preset, steps * BATCH)
    bare_pass(s, data, 5.0)  # warm-up
    bare, pipe = float("inf"), float("inf")
    for _ in range(repeats):  # alternate so drifting machine load hits both alike
        bare = min(bare, fastest(lambda: bare_pass(s, data, 5.0), 1))
        pipe = min(pipe, fastest(lambda: pipeline_pass(s, data, 5.0), 1))
    return {"measure": "overhead", "preset": preset, "steps": steps, "bare_step_ms": 1000 * bare / steps,
            "pipeline_step_ms": 1000 * pipe / steps, "ratio": pipe / bare}


def step_flops(s: FBNetStrategy, x: torch.Tensor, y: torch.Tensor) -> int:
    """3 x the counted forward FLOPs (see the module docstring)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        s.loss_fn(5.0)(s.supernet, x, y)
    return 3 * counter.get_total_flops()


def matmul_gflops(n: int, repeats: int) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    return 2 * n**3 / fastest(lambda: a @ b, repeats) / 1e9


def gflops_row(preset: str, steps: int, repeats: int, matmul_n: int) -> dict:
    s, data = strategy_for(preset, steps * BATCH)
    x, y = next(iter(data.train_w))
    flops = step_flops(s, x, y)
    bare_pass(s, data, 5.0)
    seconds = fastest(lambda: bare_pass(s, data, 5.0), repeats) / steps
    achieved, ceiling = flops / seconds / 1e9, matmul_gflops(matmul_n, repeats)
    return {"measure": "gflops", "preset": preset, "step_gflop": flops / 1e9, "step_ms": 1000 * seconds,
            "supernet_gflops": achieved, "matmul_gflops": ceiling, "ratio": achieved / ceiling}


def reset_peak_rss() -> bool:
    """Linux: writing 5 to /proc/self/clear_refs resets the peak (VmHWM)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_memory() -> dict:
    """In a fresh process: RSS before training and peak during one epoch."""
    import psutil

    torch.set_num_threads(threads())
    s, data = strategy_for("digits", DIGITS_TRAIN_W, DIGITS_TRAIN_A, warmup_epochs=0)
    before = psutil.Process().memory_info().rss / 2**20
    reset_peak_rss()
    s.train_epoch(0, data)
    peak = peak_rss_mb()
    return {"measure": "memory", "preset": "digits", "batch": BATCH, "train_w": DIGITS_TRAIN_W,
            "train_a": DIGITS_TRAIN_A, "rss_before_mb": before, "peak_rss_mb": peak, "epoch_growth_mb": peak - before}


def memory_row() -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, __file__, "--memory"], capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"memory measurement failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> dict:
    torch.set_num_threads(threads())
    steps, repeats = (4, 3) if quick else (12, 5)
    presets = ["digits"] if quick else ["digits", "mnist"]
    rows = [overhead_row(p, steps, repeats) for p in presets]
    rows += [gflops_row(p, steps, repeats, 1024 if quick else 2048) for p in presets]
    rows.append(memory_row())
    over = [r for r in rows if r["measure"] == "overhead"]
    flops = [r for r in rows if r["measure"] == "gflops"]
    summary = {"threads": threads(), "overhead_ratio_max": max(r["ratio"] for r in over),
               "overhead_target": 1.05, "overhead_ok": max(r["ratio"] for r in over) <= 1.05,
               "gflops_vs_matmul": {r["preset"]: round(r["ratio"], 4) for r in flops},
               "peak_rss_mb_digits_epoch": rows[-1]["peak_rss_mb"]}
    return {"name": "supernet", "rows": rows, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory:
        print(json.dumps(measure_memory()))
        return
    sys.path.insert(0, str(HERE))
    from run import main as run_benchmarks  # prints the table, writes bench/results/supernet.json

    run_benchmarks([*(["--quick"] if args.quick else []), "supernet"])


if __name__ == "__main__":
    main()
