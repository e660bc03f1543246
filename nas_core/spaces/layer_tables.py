"""One choice per layer: the architecture-probability table
``tables["layers"]`` (L, n_choices) shared by the spaces whose genotype is a
choice per layer (the layer-wise FBNet space: an op; the channel-ratio
space: a ratio); sampling (DC-NAS Algorithm 1, line 2) and Eq. 9.

Sampling (paper §4.2): "We normalize the probabilities of the operations in
the same layer, and then select operation of that layer based on the
normalized probability": each layer's op is drawn independently from its
row (rows are renormalised to sum to 1 here, so any non-negative table is
accepted), by inverse-CDF sampling with one uniform per layer, so a seed
always gives the same architectures. Duplicates are counted, not repeated
(``SearchSpace.sample``/``sample_in_chunks``).

Eq. 9: Σ_l a(N^l), the sum over layers of the probability of the op N uses
(``log=True``: Σ_l log a(N^l), the joint probability under layer-wise
sampling; the paper's sum is the default).
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping, Optional

import numpy as np

from nas_core.spaces.base import SampleResult, index_dtype, sample_in_chunks

KEY = "layers"


def uniform_table(num_layers: int, num_choices: int) -> dict[str, np.ndarray]:
    return {KEY: np.full((num_layers, num_choices), 1.0 / num_choices)}


def layers_table(tables: Mapping[str, np.ndarray], num_layers: int, num_ops: int) -> np.ndarray:
    """``tables["layers"]`` as float64, checked to be (num_layers, num_ops)."""
    if KEY not in tables:
        raise ValueError(f"architecture tables {sorted(tables)}: this space needs {KEY!r} (layers x choices)")
    probs = np.asarray(tables[KEY], dtype=np.float64)
    if probs.shape != (num_layers, num_ops):
        raise ValueError(f"tables[{KEY!r}] has shape {probs.shape}: the space has {num_layers} layers x "
                         f"{num_ops} choices")
    return probs


def sample_layers(table: np.ndarray, num_samples: int, seed: int,
                  progress: Optional[Callable[..., Iterable]] = None, chunk_size: int = 200_000) -> SampleResult:
    """Each layer's choice drawn independently from its renormalised row;
    unique rows and their counts (the same for any ``chunk_size``: the
    generator's stream is consumed row by row)."""
    cdf = np.cumsum(normalise_probs(table), axis=1)
    dtype = index_dtype(table.shape[1] - 1)
    return sample_in_chunks(lambda rng, n: draw_chunk(rng, cdf, n, dtype), num_samples, seed,
                            chunk_size=chunk_size, progress=progress)


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


def draw_chunk(rng: np.random.Generator, cdf: np.ndarray, n: int, dtype: np.dtype) -> np.ndarray:
    """n rows of op indices by inverse-CDF sampling, one uniform per layer."""
    u = rng.random((n, cdf.shape[0]))
    out = np.empty((n, cdf.shape[0]), dtype=dtype)
    last = cdf.shape[1] - 1
    for layer in range(cdf.shape[0]):
        out[:, layer] = np.minimum(np.searchsorted(cdf[layer], u[:, layer], side="right"), last)
    return out


def eq9_scores(op_indices: np.ndarray, probs: np.ndarray, log: bool = False) -> np.ndarray:
    """Σ_l a(N^l) (or Σ_l log a(N^l)) for each row of ``op_indices`` (s, L)
    given the per-layer probabilities ``probs`` (L, n_ops)."""
    op_indices, probs = np.asarray(op_indices), np.asarray(probs, dtype=np.float64)
    if op_indices.ndim != 2 or probs.ndim != 2 or op_indices.shape[1] != probs.shape[0]:
        raise ValueError(f"op_indices (s, L) {op_indices.shape} and probs (L, n_ops) {probs.shape} do not match")
    if op_indices.size and (op_indices.min() < 0 or op_indices.max() >= probs.shape[1]):
        raise ValueError(f"op indices must be in 0..{probs.shape[1] - 1}, got {int(op_indices.min())}.."
                         f"{int(op_indices.max())}")
    picked = probs[np.arange(probs.shape[0])[None, :], op_indices.astype(np.int64)]
    if log:
        with np.errstate(divide="ignore"):
            return np.log(picked).sum(1)
    return picked.sum(1)
