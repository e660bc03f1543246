"""A tiny standalone FBNet pre-training run with per-epoch checkpoints,
used by the resume tests in-process and as a subprocess that gets killed.

    python fbnet_entry.py OUT_DIR EPOCHS [--sleep SECONDS] [--nan-at EPOCH]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch.utils.data import Dataset, TensorDataset

from nas_core.runtime import seed_everything
from nas_core.spaces import make_space
from nas_core.spaces.layerwise import flops_latency_table
from nas_core.strategies import SearchData, create_strategy
from nas_core.train import make_loader, run_resumable

SEED = 3
FINGERPRINT = "tiny-digits"


def tiny_datasets(n_w: int = 64, n_a: int = 32) -> tuple[Dataset, Dataset]:
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target)
    return TensorDataset(x[:n_w], y[:n_w]), TensorDataset(x[n_w:n_w + n_a], y[n_w:n_w + n_a])


class NanAfter(Dataset):
    """Wraps a dataset; once ``armed`` is set, its images are NaN."""

    def __init__(self, base: Dataset) -> None:
        self.base, self.armed = base, False

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        x, y = self.base[i]
        return (x * float("nan") if self.armed else x), y


def tiny_config(epochs: int) -> dict:
    return {"epochs": epochs, "warmup_epochs": 1, "batch_size": 32, "w_lr": 0.05, "theta_lr": 0.05}


def make_strategy(epochs: int, train_w: Dataset | None = None):
    """(strategy, data) for the digits preset on the CPU, fixed latency table."""
    seed_everything(SEED)
    ds_w, ds_a = tiny_datasets()
    space = make_space("layerwise", {"preset": "digits"}, (1, 8, 8), 10)
    data = SearchData(make_loader(train_w or ds_w, 32, True), make_loader(ds_a, 32, True))
    strategy = create_strategy("fbnet", space.with_latency(flops_latency_table(space)), tiny_config(epochs),
                               torch.device("cpu"), SEED)
    strategy.progress = None
    return strategy, data


class Sleep:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_epoch_end(self, strategy, epoch, metrics) -> None:
        print(f"epoch {epoch} done", flush=True)
        time.sleep(self.seconds)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("epochs", type=int)
    parser.add_argument("--sleep", type=float, default=0.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # bit-identity across processes needs the same thread count
    strategy, data = make_strategy(args.epochs)
    result = run_resumable(strategy, data, Path(args.out), FINGERPRINT, callbacks=[Sleep(args.sleep)])
    print("genotype", result.genotype, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
