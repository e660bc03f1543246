"""Multi-trial search on digits: how trials scale out, and random search
against aging evolution at the same number of trials.

Setup: the search stage's own code (tasks/trials.py) on a project with the
default digits subset, the layer-wise space (digits preset), the ``train``
evaluator with a 3-epoch budget (the params default), one torch thread per
trial. Each round is one Prefect flow run, so its fixed cost (about a
second here) is paid per round of 2 trials: with seconds-long trials that
cost shows in the speed-up; with real trials it vanishes.

* Scale-out (3-epoch trials, and 12-epoch trials to show the per-round
  cost amortised): the same random search (rounds of 2) with the
  trials one after another in this process (the baseline), on the Prefect
  thread pool with 2 workers, and on a Dask LocalCluster of 2 worker
  processes (its start-up included). ``speedup`` = baseline wall time / mode
  wall time, same run; the trial tables must be identical in every mode.
* Strategy comparison (issue: multi-trial search II): random, evolution,
  rl, pnas and nao (whichever are registered) on the cell space at the same
  number of trials, each with its own params.yaml section (its ``batch``
  included) and the same evaluator and budget, on a cell network cut to
  3 cells of 8 channels (``COMPARE_CELL``); ``seeds`` seeds each; the
  best validation accuracy after ``trials`` trials (mean ± std over seeds)
  and the search's wall time. ``--compare-only`` runs just this part.

Usage: python bench/bench_trials.py [--quick] [--compare-only] [--strategies S ...]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


COMPARED = ("random", "evolution", "rl", "pnas", "nao")
# The comparison's trial network: the cell space's final network cut so a
# trial takes seconds on 8x8 digits (params.yaml: 8 cells of 16 channels).
COMPARE_CELL = {"final_cells": 3, "final_channels": 8, "auxiliary_weight": 0.0}


def project(root: Path, strategy: str, seed: int, trials: int, runtime: dict, budget: int = 3,
            space: str = "layerwise", batch: int | None = 2, space_settings: dict | None = None):
    """A stage project searching ``space`` with ``strategy``'s params.yaml
    section, ``trials`` trials of the ``train`` evaluator at ``budget``
    epochs (``batch`` None: the section's own)."""
    from nas_core.config import load_params, validate_params
    from tasks.project import make_project

    raw = load_params(HERE.parent / "params.yaml").model_dump(mode="json")
    raw["search"] = {"strategy": strategy, "space": space}
    raw["spaces"][space].update(space_settings or {})
    raw["runtime"].update(seed=seed, device="cpu", threads=1, **runtime)
    section = raw["strategies"][strategy]
    section.update(trials=trials, budget=budget, evaluator="train", supernet="none")
    if batch is not None:
        section["batch"] = batch
    params = validate_params(raw)
    return make_project(root, params, HERE.parent / "data"), params


def search(root: Path, params, fan_out=None) -> tuple[float, list]:
    import tasks.stages.search
    from tasks.project import stage_context

    ctx = stage_context(root, params, "search", experiment="bench")
    if fan_out is not None:
        ctx.fan_out = fan_out
    start = time.perf_counter()
    tasks.stages.search.run(params, ctx)
    seconds = time.perf_counter() - start
    ctx.log.end("FINISHED")
    lines = (root / "artifacts" / "search" / "trials.jsonl").read_text().splitlines()[1:]
    table = [{k: v for k, v in json.loads(x).items() if k not in ("seconds", "elapsed_s")} for x in lines]
    return seconds, table


def scale_out(trials: int, quick: bool, budget: int = 3) -> list[dict]:
    from flows.fanout import fan_out

    modes = [("in order, 1 worker", {"task_runner": "thread", "max_workers": 1}, None),
             ("thread pool, 2 workers", {"task_runner": "thread", "max_workers": 2}, fan_out)]
    if not quick:
        modes.append(("dask, 2 workers", {"task_runner": "dask", "dask_n_workers": 2}, fan_out))
    rows, tables = [], []
    for label, runtime, mapper in modes:
        with tempfile.TemporaryDirectory(prefix="bench_trials_") as tmp:
            root, params = project(Path(tmp) / "p", "random", 0, trials, runtime, budget)
            seconds, table = search(root, params, mapper)
        tables.append(table)
        rows.append({"part": f"scale-out, {budget}-epoch trials", "mode": label, "trials": trials,
                     "seconds": round(seconds, 2),
                     "trials_per_s": round(trials / seconds, 3)})
    for row, table in zip(rows, tables):
        row["speedup"] = round(rows[0]["seconds"] / row["seconds"], 3)
        row["same_table"] = table == tables[0]
    return rows


def compare(strategies: tuple[str, ...], trials: int, seeds: int, space: str, budget: int) -> list[dict]:
    """Best validation accuracy after ``trials`` trials per strategy, over seeds."""
    from nas_core.strategies import STRATEGIES

    rows = []
    for strategy in (s for s in strategies if s in STRATEGIES.names()):
        best, seconds = [], []
        for seed in range(seeds):
            with tempfile.TemporaryDirectory(prefix="bench_trials_") as tmp:
                root, params = project(Path(tmp) / "p", strategy, seed, trials, {"task_runner": "thread"},
                                       budget, space, batch=None, space_settings=COMPARE_CELL)
                took, table = search(root, params)
            best.append(max(r["metrics"]["score"] for r in table))
            seconds.append(took)
        rows.append({"part": f"best val acc ({space})", "mode": strategy, "trials": trials, "seeds": seeds,
                     "best_val_acc_mean": round(statistics.mean(best), 4),
                     "best_val_acc_std": round(statistics.stdev(best), 4) if seeds > 1 else 0.0,
                     "per_seed": [round(b, 4) for b in best], "seconds": round(statistics.mean(seconds), 2)})
    return rows


def run(quick: bool = False, compare_only: bool = False, strategies: tuple[str, ...] = COMPARED) -> dict:
    trials, seeds, budget = (4, 2, 1) if quick else (16, 3, 2)
    scaled = [] if compare_only else (scale_out(8 if quick else 16, quick)
                                      + ([] if quick else scale_out(12, quick, budget=12)))
    rows = scaled + compare(strategies, trials, seeds, "cell", budget)
    summary = {"speedup": {f"{r['mode']} ({r['part']})": r["speedup"] for r in scaled},
               "tables_identical": all(r.get("same_table", True) for r in rows),
               "best_val_acc": {r["mode"]: f"{r['best_val_acc_mean']:.4f} ± {r['best_val_acc_std']:.4f}"
                                for r in rows if r["part"].startswith("best val acc")},
               "seconds": {r["mode"]: r["seconds"] for r in rows if r["part"].startswith("best val acc")}}
    return {"name": "trials", "rows": rows, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--compare-only", action="store_true", help="only the strategy comparison")
    parser.add_argument("--strategies", nargs="+", default=list(COMPARED), help="strategies compared")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from run import report

    report(run(quick=args.quick, compare_only=args.compare_only, strategies=tuple(args.strategies)))


if __name__ == "__main__":
    main()
