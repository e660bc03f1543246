"""What the feature extractors share: the cosine of Eq. 6 / 7, the batch-size thresholds of
the CPU backends, the extraction methods."""
from __future__ import annotations

from typing import Callable, Iterable, Literal

import torch

Progress = Callable[..., Iterable]
Method = Literal["trie", "batched", "naive"]
# PyTorch's CPU convolution picks its backend by batch size (single-threaded 1x1 convolutions use oneDNN only
# from 16 images on), and two backends round differently: smaller chunks are walked per node.
MIN_BATCHED_CHUNK = 16
# Images per batched call on a CPU: measured on the digits preset (2 cores, one thread), calls of 1-2k images
# ran fastest; 16k-image calls were slower than one call per node (their tensors leave the caches).
CPU_CALL_IMAGES = 2048
METHODS = ("trie", "batched", "naive")


def cosine_to_first(outputs: torch.Tensor) -> torch.Tensor:
    """F_e = cos(o^1, o^e) along the epoch axis: ``outputs`` (..., η, C) ->
    (..., η). Zero vectors: F = 1 if both are zero, 0 if only one is."""
    if outputs.dim() < 2:
        raise ValueError(f"cosine_to_first expects (..., epochs, channels), got shape {tuple(outputs.shape)}")
    return cosine(outputs[..., :1, :], outputs)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity over the last axis (broadcasting), in float64, with
    the zero-vector convention of the module docstring."""
    a, b = a.double(), b.double()
    return cosine_from_sums((a * b).sum(-1), a.norm(dim=-1), b.norm(dim=-1))


def cosine_from_sums(dot: torch.Tensor, na: torch.Tensor, nb: torch.Tensor) -> torch.Tensor:
    """dot / (na · nb) with the zero-vector convention, clamped to [-1, 1]."""
    both_zero = (na == 0) & (nb == 0)
    denom = torch.where(both_zero | (na * nb == 0), torch.ones_like(dot), na * nb)
    out = torch.where(both_zero, torch.ones_like(dot), dot / denom)
    return out.clamp(-1.0, 1.0)

def gap(y: torch.Tensor) -> torch.Tensor:
    """Global average pooling over all axes after the channel axis."""
    return y.flatten(2).mean(2) if y.dim() > 2 else y


class NodeSums:
    """Per-depth sums of GAP outputs, one row per trie node (or per
    architecture on the naive path)."""

    def __init__(self, rows_per_depth: Iterable[int]) -> None:
        self.rows = list(rows_per_depth)
        self.sums: list[torch.Tensor | None] = [None] * len(self.rows)
        self.count = 0

    def add(self, depth: int, row: int, y: torch.Tensor) -> None:
        pooled = gap(y).sum(0)
        if self.sums[depth] is None:
            self.sums[depth] = torch.zeros(self.rows[depth], pooled.shape[0], dtype=torch.float64,
                                           device=pooled.device)
        self.sums[depth][row] += pooled.double()

    def add_nodes(self, depth: int, nodes: torch.Tensor, keep: torch.Tensor | None, y: torch.Tensor,
                  count: int) -> None:
        """:meth:`add` for the ``count`` nodes stacked in ``y`` (equal
        slices along the batch axis): rows ``nodes`` get the sums of the
        slices ``keep`` (None: all of them)."""
        pooled = gap(y)
        pooled = pooled.reshape(count, -1, pooled.shape[-1]).sum(1)
        if keep is not None:
            pooled = pooled[keep.to(pooled.device)]
        if self.sums[depth] is None:
            self.sums[depth] = torch.zeros(self.rows[depth], pooled.shape[1], dtype=torch.float64,
                                           device=pooled.device)
        self.sums[depth][nodes.to(pooled.device)] += pooled.double()

    def means(self) -> list[torch.Tensor]:
        if self.count == 0:
            raise ValueError("the probe set is empty: features need at least one probe image")
        return [s / self.count for s in self.sums]
