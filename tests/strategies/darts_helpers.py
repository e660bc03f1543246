"""Tiny data and configs shared by the cell-strategy tests (CPU, seconds)."""
from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

from nas_core.spaces.cell import CellSpace
from nas_core.strategies import STRATEGIES, SearchData, create_strategy

CELL_STRATEGIES = [n for n in STRATEGIES.names() if "cell" in STRATEGIES.get(n).spaces]
# The same optimiser settings for every strategy (their published defaults differ), so runs compare.
COMMON = dict(init_channels=4, epochs=2, batch_size=16, w_lr=0.025, arch_lr=3e-4, warmup_epochs=0)
TINY = {"darts": {"cells": 3}, "pc_darts": {"cells": 3, "pc_k": 2}, "gdas": {"cells": 3}, "snas": {"cells": 3},
        "p_darts": {"pdarts_cells": [1, 2], "pdarts_ops_kept": [4], "skip_dropout": [0.0, 0.3]}}


def digits_tensors(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    x = torch.tensor((x[:n] / 16.0 - 0.5) / 0.5, dtype=torch.float32).view(-1, 1, 8, 8)
    return x, torch.tensor(y[:n], dtype=torch.long)


def digits_data(n_w: int = 32, n_a: int = 16, n_val: int = 16, batch: int = 16) -> SearchData:
    """Real 8x8 digits, normalised; loaders shuffle with the global RNG (as
    DartsStrategy.search_data's)."""
    x, y = digits_tensors(n_w + n_a + n_val)
    parts = np.cumsum([0, n_w, n_a, n_val])
    sets = [TensorDataset(x[a:b], y[a:b]) for a, b in zip(parts[:-1], parts[1:])]
    return SearchData(DataLoader(sets[0], batch_size=batch, shuffle=True),
                      DataLoader(sets[1], batch_size=batch, shuffle=True),
                      DataLoader(sets[2], batch_size=batch))


def tiny_space(op_set: str = "darts") -> CellSpace:
    return CellSpace(op_set, input_channels=1, num_classes=10, final_cells=2, final_channels=4, input_hw=(8, 8))


def tiny_params(name: str, **overrides) -> dict:
    return {**COMMON, **TINY[name], **overrides}


def make(name: str, op_set: str = "darts", seed: int = 0, **overrides):
    return create_strategy(name, tiny_space(op_set), tiny_params(name, **overrides), "cpu", seed)
