"""Throughput of training many small separate networks (the ablation_train
stage): architectures × epochs per second, sequential against the Prefect
task runner with 2 workers.

Setup: the default channel-ratio space (digits preset, 8×8 inputs), the same
s architectures (seeded uniform sample) in every mode, η epochs each on 646
real digits images (the default D~), validation on 144 images and the Eq. 6/7
features on 256 probe images after every epoch, exactly what
``separate_job`` does in the stage. Modes:

* ``sequential, 1 thread``: the baseline (what the stage runs with 1 worker;
  one untimed warm-up network first absorbs torch's one-time set-up);
* ``sequential, 2 threads``: torch's default intra-op threading on 2 cores;
* ``thread runner, 2 workers``: ``flows.fanout.fan_out`` with
  ``ThreadPoolTaskRunner(2)``, 1 torch thread per network (Prefect's
  ephemeral API is started by a warm-up call before timing);
* ``dask, 2 workers`` (full run only): a LocalCluster of 2 single-threaded
  processes, cluster start-up included in the time.

``ratio`` = throughput / sequential 1-thread throughput, same run. On a
shared machine the absolute numbers move with the load; the ratios are
measured back to back.

Usage: python bench/bench_separate.py [--quick]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def digits_data():
    from sklearn.datasets import load_digits

    from nas_core.ablation.loop import Split
    from nas_core.ablation.separate import ArchData

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target)
    train = Split(x[:646], y[:646])
    return ArchData(train=train, val=Split(x[1000:1144], y[1000:1144]), num_classes=10, probe=train.x[:256])


def make_jobs(num_archs: int, epochs: int, cache: Path):
    """The ablation_train stage's jobs: the default ``spaces.channel_ratio``
    built by ``make_space`` for the data's shape, ``num_archs`` distinct
    architectures drawn with seed 0."""
    from nas_core.ablation.separate import make_jobs as jobs_for
    from nas_core.ablation.separate import spec_from_config
    from nas_core.config import AblationConfig
    from nas_core.spaces import make_space

    cfg = AblationConfig(num_archs=num_archs, epochs=epochs, eta_list=[epochs], k_list=[1])
    data = digits_data()
    space = make_space("channel_ratio", None, tuple(data.train.x.shape[1:]), data.num_classes)
    return jobs_for(space.sample_distinct(num_archs, seed=0), space, spec_from_config(cfg), data, "cpu", 0,
                    cache, "separate")


def timed(label: str, mapper, num_archs: int, epochs: int, threads: int, workers: int) -> dict:
    from nas_core.ablation.separate import separate_job

    cache = Path(tempfile.mkdtemp(prefix="bench_separate_"))
    try:
        jobs = make_jobs(num_archs, epochs, cache)
        torch.set_num_threads(threads)
        start = time.perf_counter()
        mapper(separate_job, jobs)
        seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return {"mode": label, "workers": workers, "torch_threads": threads, "archs": num_archs, "epochs": epochs,
            "seconds": round(seconds, 2), "arch_epochs_per_s": round(num_archs * epochs / seconds, 3)}


def sequential(fn, items):
    return [fn(item) for item in items]


def fan_out_with(runtime):
    from flows.fanout import fan_out

    return lambda fn, items: fan_out(fn, items, runtime, flow_name="bench-separate")


def _noop(x):
    return x


def run(quick: bool = False) -> dict:
    from nas_core.config import RuntimeConfig

    num_archs, epochs = (6, 2) if quick else (16, 4)
    threads_before = torch.get_num_threads()
    thread_runtime = RuntimeConfig(task_runner="thread", max_workers=2)
    fan_out_with(thread_runtime)(_noop, [0, 1])  # start Prefect's ephemeral API before timing
    timed("warm-up", sequential, 2, 2, 1, 1)  # torch's one-time kernel set-up, not charged to any mode
    rows = [timed("sequential, 1 thread", sequential, num_archs, epochs, 1, 1),
            timed("sequential, 2 threads", sequential, num_archs, epochs, 2, 1),
            timed("thread runner, 2 workers", fan_out_with(thread_runtime), num_archs, epochs, 1, 2)]
    if not quick:
        dask_runtime = RuntimeConfig(task_runner="dask", dask_n_workers=2)
        rows.append(timed("dask, 2 workers", fan_out_with(dask_runtime), num_archs, epochs, 1, 2))
    torch.set_num_threads(threads_before)
    base = rows[0]["arch_epochs_per_s"]
    for row in rows:
        row["ratio"] = round(row["arch_epochs_per_s"] / base, 3)
    summary = {"baseline": "sequential, 1 thread",
               "ratio": {row["mode"]: row["ratio"] for row in rows[1:]},
               "best_mode": max(rows, key=lambda r: r["arch_epochs_per_s"])["mode"]}
    return {"name": "separate", "rows": rows, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from run import report

    report(run(quick=args.quick))


if __name__ == "__main__":
    main()
