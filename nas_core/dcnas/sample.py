"""Algorithm 1, line 2 (paper §4.2): draw s architectures layer by layer from
the operation probabilities of the pre-trained supernet.

"We normalize the probabilities of the operations in the same layer, and then
select operation of that layer based on the normalized probability": each
layer's op is drawn independently from softmax(θ_l) (rows of ``probs`` are
renormalised to sum to 1 here, so any non-negative table is accepted).

Choices where the paper is silent:
- Duplicates are counted, not repeated: the result holds the unique op-index
  rows (sorted lexicographically) and how often each was drawn. Clustering
  uses the counts as sample weights, so nothing is lost.
- Draws are made in chunks of ``chunk_size`` rows from one
  ``numpy.random.Generator`` seeded by ``seed``; the generator's stream is
  consumed row by row, so the result does not depend on ``chunk_size``.
  Memory is bounded by the number of unique rows plus one chunk.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np


@dataclass(frozen=True)
class SampleResult:
    """Unique architectures (``archs`` (u, L), op indices per layer, sorted
    lexicographically) and how often each was drawn (``counts`` (u,))."""

    archs: np.ndarray
    counts: np.ndarray

    @property
    def num_drawn(self) -> int:
        return int(self.counts.sum())

    @property
    def num_unique(self) -> int:
        return int(self.archs.shape[0])


def normalise_probs(probs: np.ndarray) -> np.ndarray:
    """Rows of a (L, n_ops) table rescaled to sum to 1; rejects negative,
    non-finite or all-zero rows with a message naming the layer."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] < 1 or probs.shape[1] < 1:
        raise ValueError(f"operation probabilities must be a (layers, ops) table, got shape {probs.shape}")
    bad = ~np.isfinite(probs).all(1) | (probs < 0).any(1) | (probs.sum(1) <= 0)
    if bad.any():
        layer = int(np.flatnonzero(bad)[0])
        raise ValueError(f"operation probabilities of layer {layer} are {probs[layer].tolist()}: "
                         "need finite, non-negative values with a positive sum")
    return probs / probs.sum(1, keepdims=True)


def index_dtype(num_ops: int) -> np.dtype:
    """Smallest signed integer type that holds an op index."""
    return np.dtype(np.int8) if num_ops <= np.iinfo(np.int8).max else np.dtype(np.int16)


def draw_chunk(rng: np.random.Generator, cdf: np.ndarray, n: int, dtype: np.dtype) -> np.ndarray:
    """n rows of op indices by inverse-CDF sampling, one uniform per layer."""
    u = rng.random((n, cdf.shape[0]))
    out = np.empty((n, cdf.shape[0]), dtype=dtype)
    last = cdf.shape[1] - 1
    for layer in range(cdf.shape[0]):
        out[:, layer] = np.minimum(np.searchsorted(cdf[layer], u[:, layer], side="right"), last)
    return out


def unique_rows(rows: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Lexicographically sorted unique rows and their summed weights (counts
    when ``weights`` is None)."""
    rows = np.ascontiguousarray(rows)
    if rows.shape[0] == 0:
        return rows, np.zeros(0, dtype=np.int64)
    order = np.lexsort(rows.T[::-1])
    rows = rows[order]
    w = np.ones(rows.shape[0], dtype=np.int64) if weights is None else np.asarray(weights)[order]
    starts = np.flatnonzero(np.r_[True, (rows[1:] != rows[:-1]).any(1)])
    return rows[starts], np.add.reduceat(w, starts).astype(np.int64)


def sample_architectures(probs: np.ndarray, num_samples: int, seed: int, chunk_size: int = 200_000,
                         progress: Callable[..., Iterable] | None = None) -> SampleResult:
    """Draw ``num_samples`` architectures from the per-layer distribution
    ``probs`` (L, n_ops); return unique rows and their counts."""
    if num_samples < 1:
        raise ValueError(f"num_samples = {num_samples}: must be >= 1")
    if chunk_size < 1:
        raise ValueError(f"chunk_size = {chunk_size}: must be >= 1")
    cdf = np.cumsum(normalise_probs(probs), axis=1)
    dtype = index_dtype(cdf.shape[1])
    rng = np.random.default_rng(seed)
    sizes = [min(chunk_size, num_samples - start) for start in range(0, num_samples, chunk_size)]
    if progress is not None:
        sizes = progress(sizes, desc="sample", total=len(sizes))
    archs = np.zeros((0, cdf.shape[0]), dtype=dtype)
    counts = np.zeros(0, dtype=np.int64)
    for n in sizes:
        chunk, chunk_counts = unique_rows(draw_chunk(rng, cdf, n, dtype))
        archs, counts = unique_rows(np.concatenate([archs, chunk]), np.concatenate([counts, chunk_counts]))
    return SampleResult(archs=archs, counts=counts)
