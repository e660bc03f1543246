"""DSO-NAS on digits: its search step against DARTS's on supernets of
similar FLOPs, and the paper's Table 1 rows.

Setup: digits images (8×8), batch 32, one torch thread, the committed
params (``spaces.cell`` + ``strategies.darts``; ``spaces.dso`` +
``strategies.dso_nas`` with the search width whose complete network has
the MACs per image closest to the DARTS supernet's). A DSO-NAS step is one APG-NAG step of λ plus one NAG
step of the weights (Algorithm 1); a DARTS step is one architecture step
plus one weight step (first order as configured). Each supernet runs in its
own child process, so its peak RSS is its own: ``step_ms`` is the median of
10 timed steps after 3 warm-up steps; ``rss_growth_mb`` is the peak RSS
growth over the process's state after building the strategy. ``ratio`` =
DSO-NAS's value / DARTS's, measured back to back in the same run.

Table 1 (the paper's rows, ``seeds`` seeds): DSO-NAS-share and
DSO-NAS-full searched on D~ (the digits params), a random network with the
share result's number of kept connections, and the complete network; every
one scaled by ``spaces.dso.final_budget`` to the FLOPs of the share result
and trained from scratch for ``epochs`` epochs (augmented), test accuracy
on 360 held-out images (mean ± std over seeds). Each seed draws its own
validation split and D~.

Usage: python bench/bench_dso.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

CHILD = """
import json, resource, sys, time
import numpy as np, torch
from sklearn.datasets import load_digits
from torch.utils.flop_counter import FlopCounterMode
sys.path.insert(0, {root!r})
from nas_core.config import load_params
from nas_core.spaces import make_space
from nas_core.strategies import create_strategy
torch.set_num_threads(1)
torch.manual_seed(0)
params = load_params({params!r})
x, y = load_digits(return_X_y=True)
x = torch.tensor(x[:32] / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
y = torch.tensor(y[:32])
which = {which!r}
space_name, strategy_name = ("dso", "dso_nas") if which == "dso_nas" else ("cell", "darts")
config = {{**getattr(params.spaces, space_name).model_dump(), **{overrides!r}}}
space = make_space(space_name, config, (1, 8, 8), 10)
strategy = create_strategy(strategy_name, space, getattr(params.strategies, strategy_name), "cpu")
strategy.setup(None)
if which == "dso_nas":
    step = lambda: (strategy.lambda_step(x, y, 0, 1), strategy.weight_step(x, y, 0, 1))
    forward = lambda: strategy.supernet(x[:1])
else:
    step = lambda: (strategy._arch_step(x, y, x, y), strategy._weight_step(x, y))
    forward = lambda: strategy._loss(x[:1], y[:1])
with FlopCounterMode(display=False) as counter, torch.no_grad():
    strategy.supernet.eval()
    forward()
strategy.supernet.train()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for _ in range(3):
    step()
times = []
for _ in range({steps}):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
print(json.dumps({{"supernet": which, "macs_per_image": counter.get_total_flops() // 2,
                  "params": sum(p.numel() for p in strategy.supernet.parameters()),
                  "step_ms": 1000 * float(np.median(times)),
                  "rss_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024}}))
"""


def measure(which: str, steps: int, overrides: dict | None = None) -> dict:
    code = CHILD.format(root=str(HERE.parent), params=str(HERE.parent / "params.yaml"), which=which, steps=steps,
                        overrides=overrides or {})
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {**json.loads(out.stdout.strip().splitlines()[-1]), **(overrides or {})}


def dso_width_like(macs: int) -> int:
    """The DSO-NAS search width whose complete network has the MACs per
    image closest to ``macs`` (the DARTS supernet's)."""
    from nas_core.config import load_params
    from nas_core.spaces import make_space

    params = load_params(HERE.parent / "params.yaml")
    widths = range(4, 65, 2)

    def complete_macs(width: int) -> float:
        config = {**params.spaces.dso.model_dump(), "init_channels": width}
        space = make_space("dso", config, (1, 8, 8), 10)
        return space.cost(space.complete())["flops"]

    return min(widths, key=lambda w: abs(complete_macs(w) - macs))


def digits_seed(seed: int) -> tuple:
    """(train, val, weights half of D~, lambda half of D~, test) for one seed."""
    import torch
    from sklearn.datasets import load_digits
    from torch.utils.data import TensorDataset

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    y = torch.tensor(y)
    test = TensorDataset(x[-360:], y[-360:])
    order = torch.randperm(len(y) - 360, generator=torch.Generator().manual_seed(seed))
    px, py = x[order], y[order]
    subset = slice(144, 144 + 646)
    half = 144 + 323
    return (TensorDataset(px[144:], py[144:]), TensorDataset(px[:144], py[:144]),
            TensorDataset(px[subset.start:half], py[subset.start:half]),
            TensorDataset(px[half:subset.stop], py[half:subset.stop]), test)


def table1(seeds: int, epochs: int) -> list[dict]:
    import numpy as np
    import torch

    from nas_core.config import load_params
    from nas_core.spaces import make_space
    from nas_core.strategies import create_strategy
    from nas_core.train.fit import FitSettings, fit, seeded

    params = load_params(HERE.parent / "params.yaml")
    space_config = params.spaces.dso.model_dump()
    torch.set_num_threads(1)
    results: dict[str, list[dict]] = {}
    for seed in range(seeds):
        train, val, weights, lambdas, test = digits_seed(seed)
        found = {}
        for scope in ("share", "full"):
            space = make_space("dso", {**space_config, "scope": scope}, (1, 8, 8), 10)
            strategy = create_strategy("dso_nas", space, params.strategies.dso_nas, "cpu", seed=seed)
            found[scope] = (space, strategy.run(strategy.search_data(weights, lambdas, val)).genotype)
        share_space, share = found["share"]
        budget = share_space.cost(share)["flops"]
        networks = {"DSO-NAS-share": found["share"], "DSO-NAS-full": found["full"],
                    "random, same kept count": (share_space,
                                                share_space.random_like(share, np.random.default_rng(seed))),
                    "complete network": (share_space, share_space.complete())}
        for name, (space, genotype) in networks.items():
            scaled = make_space("dso", {**space_config, "scope": space.scope, "final_budget": budget}, (1, 8, 8), 10)
            with seeded(seed):
                network = scaled.build_network(genotype)
            settings = FitSettings(epochs=epochs, batch_size=64, lr=0.05, augment=True, seed=seed)
            fitted = fit(network, train, val, settings, torch.device("cpu"), test_set=test, dataset="digits")
            cost = scaled.cost(genotype)
            results.setdefault(name, []).append({"test_acc": fitted.test_acc, "flops": cost["flops"],
                                                 "mac": cost["mac"], "kept": genotype.num_kept})
    rows = []
    for name, runs in results.items():
        acc = np.array([r["test_acc"] for r in runs])
        rows.append({"part": "table 1", "network": name, "seeds": seeds, "epochs": epochs,
                     "test_acc_mean": round(float(acc.mean()), 4),
                     "test_acc_std": round(float(acc.std(ddof=1)), 4) if seeds > 1 else 0.0,
                     "flops": round(float(np.mean([r["flops"] for r in runs]))),
                     "mac": round(float(np.mean([r["mac"] for r in runs]))),
                     "kept": round(float(np.mean([r["kept"] for r in runs])), 1)})
    return rows


def run(quick: bool = False) -> dict:
    steps = 4 if quick else 10
    darts = measure("darts", steps)
    rows = [darts, measure("dso_nas", steps, {"init_channels": dso_width_like(darts["macs_per_image"])})]
    for row in rows:
        for key in ("step_ms", "rss_growth_mb"):
            row[key] = round(row[key], 2)
        row["step_ratio"] = round(row["step_ms"] / rows[0]["step_ms"], 3)
        row["memory_ratio"] = round(row["rss_growth_mb"] / max(rows[0]["rss_growth_mb"], 1e-9), 3)
        row["macs_ratio"] = round(row["macs_per_image"] / rows[0]["macs_per_image"], 3)
    summary = {"baseline": "darts",
               "dso_nas": {k: rows[1][k] for k in ("step_ratio", "memory_ratio", "macs_ratio")}}
    study = table1(*((1, 2) if quick else (3, 10)))
    summary["table1"] = {r["network"]: f"{r['test_acc_mean']:.4f} ± {r['test_acc_std']:.4f} at {r['flops']} FLOPs"
                         for r in study}
    return {"name": "dso", "rows": rows + study, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from run import report

    report(run(quick=args.quick))


if __name__ == "__main__":
    main()
