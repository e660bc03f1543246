"""Tiny data and configs shared by the cell-strategy tests (CPU, seconds)."""
from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

from nas_core.config import CellSearchConfig
from nas_core.spaces.cell import CellSpace
from nas_core.strategies import STRATEGIES, SearchData

CELL_STRATEGIES = [n for n in STRATEGIES.names() if getattr(STRATEGIES.get(n), "space_kind", None) == "cell"]
TINY = dict(cells=3, init_channels=4, epochs=2, batch_size=16, pc_k=2, pdarts_cells=[1, 2],
            pdarts_ops_kept=[4], skip_dropout=[0.0, 0.3])


def digits_data(n_w: int = 32, n_a: int = 16, n_val: int = 16, batch: int = 16) -> SearchData:
    """Real 8x8 digits, normalised; loaders shuffle with the global RNG."""
    x, y = load_digits(return_X_y=True)
    x = torch.tensor((x / 16.0 - 0.5) / 0.5, dtype=torch.float32).view(-1, 1, 8, 8)
    y = torch.tensor(y, dtype=torch.long)
    parts = np.cumsum([0, n_w, n_a, n_val])
    sets = [TensorDataset(x[a:b], y[a:b]) for a, b in zip(parts[:-1], parts[1:])]
    return SearchData(DataLoader(sets[0], batch_size=batch, shuffle=True),
                      DataLoader(sets[1], batch_size=batch, shuffle=True),
                      DataLoader(sets[2], batch_size=batch))


def tiny_config(**overrides) -> CellSearchConfig:
    return CellSearchConfig(**{**TINY, **overrides})


def make(name: str, op_set: str = "darts", seed: int = 0, **overrides):
    space = CellSpace(op_set, input_channels=1, num_classes=10)
    return STRATEGIES.get(name)(space, tiny_config(**overrides), torch.device("cpu"), seed=seed)
