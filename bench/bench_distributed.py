"""Data-parallel training throughput: one child network trained with
``nas_core.train.fit`` (what the evaluate and retrain stages run) in one
process against ``torchrun --nproc_per_node 2`` (DistributedDataParallel,
gloo on the CPU).

Setup: the network of the layer-wise space's ``mnist`` preset with every
layer ``k3_e6``, built by ``space.build_network`` (as the stages build
theirs), on 28×28 single-channel images (seeded random tensors: no
download), batch 64, two epochs; the time of the second epoch (training
plus validation) is the figure, so process start-up, process-group set-up
and torch's one-time kernel set-up are left out (the wall time with
start-up is reported too).
Modes:

* ``1 process, 1 thread``: the baseline;
* ``1 process, 2 threads``: torch's intra-op threading on 2 cores;
* ``torchrun, 2 × 1 thread``: 2 ranks, each 32 images of every batch.

``ratio`` = images/s over the baseline's, same run. On a 2-core CPU this
says what gloo's all-reduce costs against intra-op threads; on GPUs (nccl,
one GPU per rank) the same code scales with the number of GPUs.

Usage: python bench/bench_distributed.py [--quick]
       (the worker: python bench/bench_distributed.py --worker OUT.json N)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
BATCH = 64


def dataset(n: int, seed: int):
    from torch.utils.data import TensorDataset

    gen = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 1, 28, 28, generator=gen), torch.randint(0, 10, (n,), generator=gen))


def network():
    """``space.build_network`` of the all-``k3_e6`` genotype under a seeded
    RNG, as the evaluate and retrain stages build their networks."""
    from nas_core.spaces import make_space
    from nas_core.train.fit import seeded

    space = make_space("layerwise", {"preset": "mnist"}, (1, 28, 28), 10)
    genotype = space.decode(np.full(space.encoding_length, space.op_index("k3_e6"), dtype=np.int64))
    with seeded(0):
        return space.build_network(genotype)


def worker(out: str, images: int) -> None:
    """Train for two epochs; rank 0 writes the second epoch's seconds."""
    from nas_core.train import distributed as ddp
    from nas_core.train.fit import FitSettings, fit

    device = ddp.init_from_env(torch.device("cpu"))
    stamps: list[float] = [time.perf_counter()]
    fit(network(), dataset(images, 0), dataset(images // 4, 1), FitSettings(epochs=2, batch_size=BATCH), device,
        on_epoch=lambda epoch, row: stamps.append(time.perf_counter()))
    if ddp.is_main():
        Path(out).write_text(json.dumps({"epoch_s": stamps[2] - stamps[1], "world": ddp.world_size()}))
    ddp.cleanup()


def launch(label: str, cmd: list[str], threads: int, images: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_distributed_") as tmp:
        out = Path(tmp) / "result.json"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(HERE.parent)}
        start = time.perf_counter()
        subprocess.run([*cmd, str(Path(__file__).resolve()), "--worker", str(out), str(images)], check=True,
                       env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        result = json.loads(out.read_text())
    epoch = result["epoch_s"]
    return {"mode": label, "processes": result["world"], "torch_threads": threads, "images": images,
            "epoch_s": round(epoch, 2), "images_per_s": round((images + images // 4) / epoch, 1),
            "wall_s_with_startup": round(wall, 1)}


def run(quick: bool = False) -> dict:
    images = 512 if quick else 4096
    torchrun = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2"]
    rows = [launch("1 process, 1 thread", [sys.executable], 1, images),
            launch("1 process, 2 threads", [sys.executable], 2, images),
            launch("torchrun, 2 × 1 thread", torchrun, 1, images)]
    base = rows[0]["images_per_s"]
    for row in rows:
        row["ratio"] = round(row["images_per_s"] / base, 3)
    summary = {"baseline": rows[0]["mode"], "ratio": {row["mode"]: row["ratio"] for row in rows[1:]}}
    return {"name": "distributed", "rows": rows, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", nargs=2, metavar=("OUT", "IMAGES"))
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]))
        return
    sys.path.insert(0, str(HERE))
    from run import report

    report(run(quick=args.quick))


if __name__ == "__main__":
    main()
