"""In-memory splits for the ablation: it trains many small networks on the
same small splits, so each split is stacked into tensors once (no per-item
dataset transforms per network and epoch). Training and evaluation use the
project's shared loop, re-exported here as the ablation's one seam."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, TensorDataset

from nas_core.train.loop import evaluate, train_one_epoch

__all__ = ["Split", "stack_split", "evaluate", "train_one_epoch"]


@dataclass
class Split:
    """Images (N, C, H, W) float and labels (N,) long of one split."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.ndim != 4 or self.y.ndim != 1 or len(self.x) != len(self.y) or len(self.x) == 0:
            raise ValueError(f"a split needs images (N, C, H, W) and labels (N,) with N > 0, got "
                             f"{tuple(self.x.shape)} and {tuple(self.y.shape)}")

    def loader(self, batch_size: int, generator: torch.Generator | None = None) -> DataLoader:
        """Shuffled when ``generator`` is given, in order otherwise."""
        return DataLoader(TensorDataset(self.x, self.y), batch_size=batch_size,
                          shuffle=generator is not None, generator=generator)


def stack_split(dataset) -> Split:
    """Materialise a map-style dataset of (image, label) into tensors."""
    if len(dataset) == 0:
        raise ValueError("cannot train on an empty split")
    xs, ys = zip(*(dataset[i] for i in range(len(dataset))))
    return Split(torch.stack([torch.as_tensor(x, dtype=torch.float32) for x in xs]),
                 torch.as_tensor(ys, dtype=torch.long))
