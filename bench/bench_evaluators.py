"""Evaluators on digits: trials per second, and how well each zero-cost
proxy (and FLOPs / params) ranks architectures like training does.

Data: scikit-learn's digits (8×8), D~ = the first 700 images, validation =
the other 1,097. Spaces: ``channel_ratio`` (params.yaml's digits section)
and ``cell`` (params.yaml's section shrunk to 3 cells of 4 channels, so 50
trainings fit in a few minutes on one core). On each space the same ``n``
distinct random genotypes (seed 0; trial i has seed i) are scored by

* ``train`` at the reference budget (full run: 6 epochs on channel_ratio, 4
  on cell; ``--quick``: 4 and 3) — the ranking the others are compared with;
* ``train`` with a 1-epoch budget (the cheapest training fidelity);
* ``zero_cost`` computing all seven proxies (batch 64) at once.

Rows give trials per second of each evaluator (one torch thread, trials in
sequence) and Kendall τ (scipy.stats.kendalltau, τ-b) of each measure with
the reference validation accuracy, with its p-value. ``supernet``: its
throughput only, on the cell space, with DARTS's search network at
initialisation (params.yaml's ``strategies.darts`` shape): training that
supernet takes about 80 s per epoch here and two epochs reach only ~33 %
validation accuracy, so no trained supernet is cheap to get and its τ is not
measured; its speed does not depend on its weights. The channel-ratio space
has no supernet.

Usage: python bench/bench_evaluators.py [--quick]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

SHAPE, CLASSES = (1, 8, 8), 10
TRAIN_IMAGES = 700
SPACE_OVERRIDES = {"channel_ratio": {}, "cell": {"final_cells": 3, "final_channels": 4}}
REFERENCE_EPOCHS = {"channel_ratio": {True: 4, False: 6}, "cell": {True: 3, False: 4}}


def digits_data():
    from sklearn.datasets import load_digits
    from torch.utils.data import TensorDataset

    from nas_core.evaluators import EvalData

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target)
    return EvalData(TensorDataset(x[:TRAIN_IMAGES], y[:TRAIN_IMAGES]),
                    TensorDataset(x[TRAIN_IMAGES:], y[TRAIN_IMAGES:]), "digits")


def build_space(name: str, params):
    from nas_core.spaces import make_space

    section = {**getattr(params.spaces, name).model_dump(), **SPACE_OVERRIDES[name]}
    return make_space(name, section, SHAPE, CLASSES)


def distinct_genotypes(space, n: int, seed: int = 0) -> list:
    rng, seen, out = np.random.default_rng(seed), set(), []
    while len(out) < n:
        g = space.random(rng)
        key = space.encode(g).tobytes()
        if key not in seen:
            seen.add(key)
            out.append(g)
    return out


def timed_trials(evaluator, genotypes: list, data, desc: str, **kwargs) -> tuple[list[dict], float]:
    from nas_core.train.loop import default_progress

    start, results = time.perf_counter(), []
    for i, g in enumerate(default_progress(genotypes, desc=desc, total=len(genotypes))):
        results.append(evaluator.evaluate(g, data, seed=i, **kwargs))
    return results, time.perf_counter() - start


def tau_row(space: str, evaluator: str, measure: str, values: list[float], reference: list[float]) -> dict:
    tau, p = kendalltau(values, reference)
    return {"space": space, "evaluator": evaluator, "measure": measure,
            "kendall_tau": round(float(tau), 3), "p_value": float(f"{p:.3g}")}


def speed(trials: int, seconds: float) -> dict:
    return {"trials": trials, "seconds": round(seconds, 2), "trials_per_s": round(trials / seconds, 3)}


def space_rows(name: str, params, data, n: int, quick: bool) -> list[dict]:
    from nas_core.evaluators import create_evaluator
    from nas_core.evaluators.zero_cost import PROXIES

    space = build_space(name, params)
    genotypes = distinct_genotypes(space, n)
    train = create_evaluator("train", space, params.evaluators.train)
    epochs = REFERENCE_EPOCHS[name][quick]
    ref, ref_s = timed_trials(train, genotypes, data, f"{name} train {epochs} ep", budget=epochs)
    acc = [m["val_acc"] for m in ref]
    low, low_s = timed_trials(train, genotypes, data, f"{name} train 1 ep", budget=1)
    zero_cost = create_evaluator("zero_cost", space, params.evaluators.zero_cost.model_copy(
        update={"proxies": PROXIES}))
    proxies, zc_s = timed_trials(zero_cost, genotypes, data, f"{name} zero_cost")
    rows = [{"space": name, "evaluator": "train", "measure": f"val_acc, {epochs} epochs (reference)",
             **speed(n, ref_s), "mean_val_acc": round(float(np.mean(acc)), 3),
             "std_val_acc": round(float(np.std(acc)), 3)},
            {**tau_row(name, "train", "val_acc, 1 epoch", [m["val_acc"] for m in low], acc), **speed(n, low_s)},
            {"space": name, "evaluator": "zero_cost", "measure": "all 7 proxies", **speed(n, zc_s)}]
    rows += [tau_row(name, "zero_cost", p, [m[f"proxy_{p}"] for m in proxies], acc) for p in PROXIES]
    return rows


def supernet_row(params, data, n: int) -> dict:
    """Throughput of the supernet evaluator on the cell space with DARTS's
    search network at initialisation (see the module docstring)."""
    from nas_core.evaluators import create_evaluator
    from nas_core.strategies import create_strategy

    space = build_space("cell", params)
    strategy = create_strategy("darts", space, params.strategies.darts, "cpu", seed=0)
    strategy.setup(None)
    evaluator = create_evaluator("supernet", space, params.evaluators.supernet)
    _, seconds = timed_trials(evaluator, distinct_genotypes(space, n), data, "cell supernet",
                              supernet=strategy.supernet)
    return {"space": "cell", "evaluator": "supernet", "measure": "val_acc (untrained supernet: speed only)",
            **speed(n, seconds)}


def summarise(rows: list[dict]) -> dict:
    summary = {}
    for name in SPACE_OVERRIDES:
        taus = {r["measure"]: r["kendall_tau"] for r in rows
                if r["space"] == name and r["evaluator"] == "zero_cost" and "kendall_tau" in r}
        if not taus:
            continue
        baseline = max(taus["flops"], taus["params"])
        best = max((p for p in taus if p not in ("flops", "params")), key=taus.get)
        summary[name] = {"best_proxy": best, "best_tau": taus[best], "best_baseline_tau": baseline,
                         "proxies_beating_flops_and_params": sorted(p for p, t in taus.items()
                                                                    if p not in ("flops", "params") and t > baseline)}
    speeds = {f"{r['space']}/{r['evaluator']}/{r['measure']}": r["trials_per_s"] for r in rows if "trials_per_s" in r}
    summary["trials_per_s"] = speeds
    summary["supernet_tau"] = "not measured: no trained supernet is cheap to get (module docstring)"
    return summary


def run(quick: bool = False) -> dict:
    from nas_core.config import load_params

    n = 12 if quick else 50
    params = load_params(HERE.parent / "params.yaml")
    data = digits_data()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = [row for name in SPACE_OVERRIDES for row in space_rows(name, params, data, n, quick)]
        rows.append(supernet_row(params, data, 3 if quick else 10))
    finally:
        torch.set_num_threads(threads)
    return {"name": "evaluators", "rows": rows, "summary": {"genotypes_per_space": n, **summarise(rows)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="12 genotypes per space, shorter reference training")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from run import report

    report(run(quick=args.quick))


if __name__ == "__main__":
    main()
