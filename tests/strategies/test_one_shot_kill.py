"""StacNAS, DNAS-CAM and ENAS survive a SIGKILL: a search process killed after
its first per-epoch checkpoint and started again ends with a final
checkpoint equal, bit for bit, to an uninterrupted run's (every tensor:
weights, architecture parameters, optimiser states, RNG states; StacNAS's
groups, activated groups and correlation; ENAS's controller, its
optimiser and baseline; the history without its
wall-clock readings).

This file is also the search process:

    python test_one_shot_kill.py OUT_DIR {stacnas,dnas_cam,enas} [--sleep SECONDS]

StacNAS runs its three phases (cluster, stage 1, stage 2) one epoch each,
so a kill after epoch 1 resumes across the clustering and the group
activation; DNAS-CAM and ENAS run three epochs.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from sklearn.datasets import load_digits
from torch.utils.data import TensorDataset

from nas_core.runtime import seed_everything
from nas_core.spaces import make_space
from nas_core.strategies import create_strategy
from nas_core.train import list_checkpoints, load_checkpoint, run_resumable

EPOCHS = 3
SEED = 5
FINGERPRINT = "tiny-digits-kill"
TIMING = ("step_time_s", "peak_rss_mb", "cuda_peak_mb")
CONFIGS = {
    "stacnas": ("cell", {"final_cells": 2, "final_channels": 4},
                {"init_channels": 4, "epochs": 1, "batch_size": 16, "cluster_cells": 1, "stage1_cells": 1,
                 "stage2_cells": 2, "cluster_images": 16, "zeta_iterations": 1, "zeta_batches": 2}),
    "dnas_cam": ("global_cell", {"cells": 3, "final_channels": 4},
                 {"init_channels": 4, "epochs": EPOCHS, "batch_size": 16, "pc_k": 4}),
    "enas": ("cell", {"final_cells": 2, "final_channels": 4},
             {"init_channels": 4, "cells": 2, "epochs": EPOCHS, "batch_size": 16, "hidden": 8,
              "controller_steps": 2, "controller_batch": 2, "derive_samples": 4, "table_samples": 20}),
}
REPO = Path(__file__).resolve().parents[2]


def make_strategy(name: str):
    """(strategy, search data) on 8x8 digits, CPU, seeded."""
    seed_everything(SEED)
    space_name, space_config, config = CONFIGS[name]
    space = make_space(space_name, {"op_set": "darts", **space_config}, (1, 8, 8), 10)
    strategy = create_strategy(name, space, config, "cpu", SEED)
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x[:40] / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    y = torch.tensor(y[:40])
    sets = [TensorDataset(x[a:b], y[a:b]) for a, b in ((0, 16), (16, 32), (32, 40))]  # one batch each
    return strategy, strategy.search_data(*sets)


class Sleep:
    """Gives the test time to kill between epochs."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_epoch_end(self, strategy, epoch, metrics) -> None:
        time.sleep(self.seconds)


def search(name: str, out: Path, sleep: float = 0.0) -> None:
    strategy, data = make_strategy(name)
    assert strategy.num_epochs() == EPOCHS
    run_resumable(strategy, data, out, FINGERPRINT, callbacks=[Sleep(sleep)])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("strategy", choices=sorted(CONFIGS))
    parser.add_argument("--sleep", type=float, default=0.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # bit-identity across processes needs the same thread count
    search(args.strategy, Path(args.out), args.sleep)
    return 0


# ---------------------------------------------------------------- the test

def assert_identical(a: Any, b: Any, where: str = "state") -> None:
    """Recursively equal: tensors bit for bit, numbers exactly, timing
    readings of the history skipped."""
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            if key not in TIMING:
                assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    else:
        assert a == b, where


def run_entry(out: Path, name: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, __file__, str(out), name, *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_sigkill_mid_run_then_rerun_equals_an_uninterrupted_run(name: str, tmp_path: Path) -> None:
    """The reference is an uninterrupted search process, as the killed and
    the resumed one are (the checkpoints hold every RNG state of the
    process, Python's included)."""
    reference = run_entry(tmp_path / "reference", name)
    output = reference.communicate(timeout=240)[0]
    assert reference.returncode == 0, output
    killed = tmp_path / "killed"
    proc = run_entry(killed, name, "--sleep", "1.0")
    deadline = time.monotonic() + 240
    while not (killed / "epoch_001.pt.sha256").exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "the run did not reach epoch 1"
        time.sleep(0.05)
    time.sleep(0.2)  # inside epoch 1's sleep or epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = dict(list_checkpoints(killed))
    assert 1 <= max(done) < EPOCHS
    before = {e: (p.stat().st_ino, p.stat().st_mtime_ns) for e, p in done.items()}
    resumed = run_entry(killed, name)
    output = resumed.communicate(timeout=240)[0]
    assert resumed.returncode == 0, output
    assert [e for e, _ in list_checkpoints(killed)] == list(range(1, EPOCHS + 1))
    after = {e: (p.stat().st_ino, p.stat().st_mtime_ns) for e, p in list_checkpoints(killed)}
    assert all(after[e] == before[e] for e in before)  # resumed: the epochs done before the kill were not rerun
    final = f"epoch_{EPOCHS:03d}.pt"
    reference, again = load_checkpoint(tmp_path / "reference" / final), load_checkpoint(killed / final)
    assert_identical(reference, again)
    assert reference["epoch"] == EPOCHS and reference.get("phase", 2) == 2  # StacNAS: ended in stage 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
