"""DC-NAS feature extraction (Eq. 7) that batches and fans out: archs/s at
s = 10^4 for the naive path, the per-node prefix trie, the batched trie, and
the batched trie cut into 2 partitions on a Dask LocalCluster of 2 workers
against the same 2 partitions on a 1-worker cluster.

Setting, as bench_dcnas.py: FBNet's supernet over the digits preset of the
layer-wise space (6 layers, 9 ops), η = 2 checkpoints (seeded
perturbations of the initial weights), one torch thread per process,
BatchNorm ``running``, architectures drawn from softmax(θ), θ ~ N(0, 1.5²)
per entry. Unlike bench_dcnas.py the checkpoints are files and the probe is
the subset stage's probe split (256 digits images, one chunk) of a
temporary project, so the Dask rows run the dcnas_features stage's own job
function (``tasks.stages.dcnas_features.extract_partition``: the worker restores
the strategy from the checkpoint files and reads the probe split itself).
The Dask rows submit the jobs with ``distributed.Client`` directly, so
Prefect's per-task overhead is not in them; the workers are started as the
stage's Dask runner starts them (flows/runners.py: ``local_cluster_kwargs``,
``configure_dask_workers``, which drops the nanny's
``MALLOC_TRIM_THRESHOLD_``: with it torch ran 2.5-3x slower in a worker than
in-process here); each worker runs one warm-up job first (imports, strategy
restore); ``cores_obtained`` is the workers' CPU seconds over the wall
time (2 at best with 2 workers; less when other work holds the cores).
``identical`` says whether the features equal the per-node trie's bit for
bit.

Two more rows walk the same rows in probe chunks of 32 images (8x the
calls; their ``identical`` compares batched with per-node at that chunk
size, since float32 sums within a chunk depend on its size).

``calls_per_arch``: ``path_step`` calls per unique architecture, per probe
chunk and epoch (naive: L; per-node trie: trie nodes / u; batched: planned
calls / u, summed over partitions, which recompute the ancestors shared
across a cut). ``projected_1e7_h``: the measured seconds per unique
architecture × 10^7 (an upper bound for the trie rows, whose sharing grows
with s; the digits preset itself has only 9^6 = 531,441 architectures).
The naive path is timed on at most ``naive_cap`` architectures and scaled
(its cost is linear in u). Target: 2 Dask workers ≥ 1.7× one worker.

Usage: python bench/bench_features.py [--quick]
(--quick: s = 1,000, about 2 minutes here; the full run at s = 10^4 about 10-15 minutes).
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

ETA = 2
THETA_STD = 1.5
SMALL_CHUNK = 32


def _project(root: Path):
    """A temporary project: the digits data and the subset stage's splits
    under the default params (probe split of 256 images)."""
    from nas_core.config import load_params
    from nas_core.data import load_source, make_splits, materialize_digits, write_splits

    params = load_params(HERE.parent / "params.yaml")
    materialize_digits(HERE.parent / "data")
    (root / "data").symlink_to(HERE.parent / "data")
    source = load_source(params.data, root)
    splits = make_splits(source.train_targets, source.test_targets, params.data, params.subset, params.runtime.seed)
    write_splits(splits, source, root / "artifacts" / "subset", params.runtime.seed)
    return params


def _checkpoints(root: Path):
    """FBNet on the digits preset and η checkpoint files of seeded
    perturbations of its initial weights."""
    import torch

    from nas_core.spaces import make_space
    from nas_core.spaces.layerwise import flops_latency_table
    from nas_core.strategies import create_strategy
    from nas_core.train.checkpoint import save_checkpoint

    space = make_space("layerwise", {"preset": "digits"}, (1, 8, 8), 10)
    space = space.with_latency(flops_latency_table(space))
    strategy = create_strategy("fbnet", space, None, "cpu", 0)
    strategy.setup(None)
    gen = torch.Generator().manual_seed(1)
    paths = []
    for epoch in range(1, ETA + 1):
        with torch.no_grad():
            for name, p in strategy.supernet.named_parameters():
                if name != "theta":
                    p.add_(0.05 * torch.randn(p.shape, generator=gen))
        paths.append(str(save_checkpoint(root / "checkpoints", epoch, strategy.state_dict())))
    return strategy, paths


def _archs(space, s: int) -> np.ndarray:
    logits = np.random.default_rng(0).normal(0.0, THETA_STD, size=(space.num_layers, space.num_ops))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return space.sample({"layers": probs}, s, seed=0).archs


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


class Setting:
    """What every row shares: the strategy, checkpoint files, probe, rows."""

    def __init__(self, root: Path, s: int) -> None:
        import torch

        from nas_core.data.subset import load_splits
        from nas_core.dcnas.features import plan_batch_limits, supernet_trie
        from tasks.stages.dcnas_features import CheckpointSet, ProbeSet

        params = _project(root)
        self.strategy, self.paths = _checkpoints(root)
        self.space = self.strategy.space
        self.probe_split = load_splits(params.data, root, root / "artifacts" / "subset")[1]["probe"]
        self.chunk = len(self.probe_split)
        self.archs = _archs(self.space, s)
        self.trie = supernet_trie(self.strategy.supernet, self.archs)
        self.memory_mb = params.dcnas_features.memory_mb
        self.limits = plan_batch_limits(self.strategy.supernet, self.archs, (1, 8, 8), torch.device("cpu"),
                                        params.dcnas_features.memory_mb, self.chunk)  # as the stage plans them
        self.spec = CheckpointSet("fbnet", self.strategy.config.model_dump(mode="json"), self.space, 0,
                                  self.paths[-1], tuple(self.paths))
        self.probe = ProbeSet(params.data, str(root), str(root / "artifacts" / "subset"), self.chunk)

    def extract(self, rows: np.ndarray, method: str, chunk: int | None = None) -> np.ndarray:
        import torch

        from nas_core.dcnas.features import extract_output_features
        from nas_core.train.checkpoint import load_checkpoint
        from nas_core.train.loop import make_loader

        chunk = chunk or self.chunk
        limits = self.limits_for(rows, chunk)
        epochs = (self.strategy.load_supernet(load_checkpoint(p)) for p in self.paths)
        probe = make_loader(self.probe_split, chunk, shuffle=False)
        return extract_output_features(epochs, rows, probe, torch.device("cpu"), method=method, limits=limits)

    def limits_for(self, rows: np.ndarray, chunk: int):
        import torch

        from nas_core.dcnas.features import plan_batch_limits

        if chunk == self.chunk:
            return self.limits
        return plan_batch_limits(self.strategy.supernet, rows, (1, 8, 8), torch.device("cpu"), self.memory_mb, chunk)

    def calls(self, rows: np.ndarray, chunk: int | None = None) -> int:
        """Planned batched calls per probe chunk and epoch."""
        from nas_core.dcnas.features import plan_batched_walk, supernet_trie

        return plan_batched_walk(self.strategy.supernet, supernet_trie(self.strategy.supernet, rows),
                                 self.limits_for(rows, chunk or self.chunk)).calls


def _row(method: str, workers, u: int, seconds: float, calls: float, naive_s: float, identical) -> dict:
    return {"method": method, "workers": workers, "unique": u, "seconds": round(seconds, 2),
            "archs_per_s": round(u / seconds, 1), "calls_per_arch": round(calls / u, 3),
            "vs_naive": round(naive_s / seconds, 2), "projected_1e7_h": round(seconds / u * 1e7 / 3600, 1),
            "identical": identical}


def single_process_rows(setting: Setting, naive_cap: int) -> tuple[list[dict], np.ndarray]:
    trie, u = setting.trie, setting.trie.rows.shape[0]
    setting.extract(setting.archs[:1], "trie")  # warm-up
    trie_s, reference = _timed(lambda: setting.extract(setting.archs, "trie"))
    batched_s, batched = _timed(lambda: setting.extract(setting.archs, "batched"))
    sub = setting.archs[np.random.default_rng(1).permutation(u)[:naive_cap]]
    naive_sub_s, _ = _timed(lambda: setting.extract(sub, "naive"))
    naive_s = naive_sub_s * u / sub.shape[0]
    rows = [_row("naive", 1, u, naive_s, trie.naive_nodes, naive_s, None),
            _row("trie (per node)", 1, u, trie_s, trie.total_nodes, naive_s, True),
            _row("batched trie", 1, u, batched_s, setting.calls(setting.archs), naive_s,
                 bool(np.array_equal(batched, reference)))]
    rows[0]["naive_timed_archs"] = int(sub.shape[0])
    # chunks of 32 probe images: 8x the calls, where batching pays most (compared with each other: the float32
    # sums within a chunk differ from those of 256-image chunks)
    small_trie_s, small_trie = _timed(lambda: setting.extract(setting.archs, "trie", SMALL_CHUNK))
    small_batched_s, small_batched = _timed(lambda: setting.extract(setting.archs, "batched", SMALL_CHUNK))
    rows += [_row(f"trie (per node), chunks of {SMALL_CHUNK}", 1, u, small_trie_s, trie.total_nodes, naive_s, True),
             _row(f"batched trie, chunks of {SMALL_CHUNK}", 1, u, small_batched_s,
                  setting.calls(setting.archs, SMALL_CHUNK), naive_s, bool(np.array_equal(small_batched, small_trie)))]
    return rows, reference


def dask_seconds(setting: Setting, workers: int, parts: int) -> tuple[float, np.ndarray, int]:
    """Wall time of the batched trie in ``parts`` partitions on a
    LocalCluster of ``workers`` single-threaded processes (after one
    warm-up job per worker), the merged features and the planned calls."""
    from distributed import Client, LocalCluster

    from flows.runners import configure_dask_workers, local_cluster_kwargs
    from nas_core.config import RuntimeConfig
    from nas_core.dcnas.features import assemble_partitions, partition_rows
    from tasks.stages.dcnas_features import FeatureJob, extract_partition

    trie = setting.trie
    ranges = partition_rows(trie, parts)
    job = lambda rows: FeatureJob(rows, setting.spec, setting.probe, "running", "batched", setting.limits)  # noqa: E731
    configure_dask_workers()  # as the stage's Dask runner (flows/runners.py make_dask_runner)
    kwargs = local_cluster_kwargs(RuntimeConfig(task_runner="dask", dask_n_workers=workers), False)
    with LocalCluster(**kwargs) as cluster, Client(cluster) as client:
        addresses = list(client.scheduler_info()["workers"])
        client.gather([client.submit(extract_partition, job(trie.rows[:1]), workers=[a], pure=False)
                       for a in addresses])
        seconds, results = _timed(lambda: client.gather([client.submit(extract_partition, job(trie.rows[lo:hi]),
                                                                       pure=False) for lo, hi in ranges]))
    features = assemble_partitions(trie, ranges, [r["features"] for r in results])
    cpu = sum(r["cpu_seconds"] for r in results)
    return seconds, features, sum(setting.calls(trie.rows[lo:hi]) for lo, hi in ranges), cpu


def dask_rows(setting: Setting, reference: np.ndarray, naive_s: float) -> list[dict]:
    """``cores_obtained``: the workers' CPU seconds over the wall time (at
    most the worker count; less when other work holds the cores)."""
    u = setting.trie.rows.shape[0]
    rows = []
    for workers in (1, 2):
        seconds, features, calls, cpu = dask_seconds(setting, workers, 2)
        rows.append({**_row("batched trie, Dask, 2 partitions", workers, u, seconds, calls, naive_s,
                            bool(np.array_equal(features, reference))), "cores_obtained": round(cpu / seconds, 2)})
    return rows


def run(quick: bool = False) -> dict:
    import torch

    torch.set_num_threads(1)
    s = 1000 if quick else 10_000
    with tempfile.TemporaryDirectory(prefix="bench_features_") as tmp:
        setting = Setting(Path(tmp), s)
        rows, reference = single_process_rows(setting, naive_cap=100 if quick else 1000)
        naive_s = rows[0]["seconds"]
        rows += dask_rows(setting, reference, naive_s)
    by = {(r["method"], r["workers"]): r for r in rows}
    one, two = by[("batched trie, Dask, 2 partitions", 1)], by[("batched trie, Dask, 2 partitions", 2)]
    ratio = one["seconds"] / two["seconds"]
    summary = {"s": s, "unique": rows[0]["unique"], "eta": ETA, "probe_images": setting.chunk,
               "batched_vs_per_node": round(by[("trie (per node)", 1)]["seconds"] /
                                            by[("batched trie", 1)]["seconds"], 2),
               "dask_2_vs_1_workers": round(ratio, 2), "dask_target": ">= 1.7x one worker",
               "dask_2_workers_cores_obtained": two["cores_obtained"],
               "dask_target_met": (not quick) and ratio >= 1.7,
               "all_identical": all(r["identical"] in (True, None) for r in rows),
               "load_average_1min_at_end": round(os.getloadavg()[0], 2)}
    return {"name": "features", "rows": rows, "summary": summary}


if __name__ == "__main__":  # the harness prints the table and writes bench/results/features.json
    sys.path.insert(0, str(HERE))
    from run import main

    sys.exit(main([*sys.argv[1:], "features"]))
