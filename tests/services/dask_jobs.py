"""Functions mapped over Dask workers in tests (importable by name)."""
from __future__ import annotations

import multiprocessing
import os

import torch
from torch.utils.data import DataLoader, TensorDataset


def train_tiny(seed: int) -> dict:
    """A few SGD steps of a linear model on seeded data. ``daemon``: whether
    this process may not start children (a DataLoader with workers fails
    in a daemonic Dask worker with 'daemonic processes are not allowed to
    have children')."""
    g = torch.Generator().manual_seed(seed)  # not the global RNG: thread-pool tasks share that one
    x, y = torch.randn(64, 8, generator=g), torch.randint(0, 3, (64,), generator=g)
    model = torch.nn.Linear(8, 3)
    with torch.no_grad():
        model.weight.copy_(0.3 * torch.randn(3, 8, generator=g))
        model.bias.zero_()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for xb, yb in DataLoader(TensorDataset(x, y), batch_size=16):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        optimizer.step()
    return {"seed": seed, "loss": float(loss.detach()), "weight_sum": float(model.weight.detach().sum()),
            "worker": dask_worker_name(), "pid": os.getpid(), "marker": os.environ.get("NASFLOW_TEST_MARKER"),
            "daemon": multiprocessing.current_process().daemon}


def dask_worker_name() -> str | None:
    from distributed import get_worker

    try:
        return str(get_worker().name)
    except ValueError:
        return None
