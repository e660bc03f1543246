"""Selection inside clusters and between them (DC-NAS §3.3).

- Eq. 8: N̂_k = argmax_{N ∈ G_k} T̃(N, D̃), the early-stopping accuracy on the
  reduced set, for architectures trained separately.
- Eq. 9: N̂_k = argmax_{N ∈ G_k} Σ_l a(N^l), the sum over layers of the
  operation probability of the op N uses (sub-networks of a supernet). The
  scores come from the space (``SearchSpace.score(rows, tables, log)``,
  which knows its encoding); here they are maximised per cluster.
- Eq. 10: N* = argmax over the K representatives of the accuracy after full
  training on D (validation accuracy here: the test split stays unseen).

Ties go to the lowest index everywhere (``np.argmax`` semantics).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def best_per_cluster(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Row index of the highest-score member of each cluster 0..K-1
    (K = labels.max() + 1); ties -> lowest index. A cluster without members
    is an error (k-means never leaves one empty)."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    if labels.ndim != 1 or labels.shape != scores.shape or labels.size == 0:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} must be equal non-empty 1-D arrays")
    if labels.min() < 0:
        raise ValueError(f"cluster labels must be >= 0, got {labels.min()}")
    return top_per_cluster(labels, scores, 1)[:, 0]


def top_per_cluster(labels: np.ndarray, scores: np.ndarray, m: int) -> np.ndarray:
    """(K, m) row indices of the m best members of each cluster, best first
    (ties -> lowest index); -1 pads clusters with fewer than m members."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    k = int(labels.max()) + 1
    order = np.lexsort((np.arange(labels.size), -scores, labels))  # by cluster, score desc, index asc
    starts = np.searchsorted(labels[order], np.arange(k), side="left")
    ends = np.searchsorted(labels[order], np.arange(k), side="right")
    out = np.full((k, m), -1, dtype=np.int64)
    for cluster, (a, b) in enumerate(zip(starts, ends)):
        if a == b:
            raise ValueError(f"cluster {cluster} has no members")
        members = order[a:min(b, a + m)]
        out[cluster, :members.size] = members
    return out


def final_choice(val_accuracies: Sequence[float]) -> int:
    """Eq. 10: index of the best validation accuracy (ties -> first)."""
    acc = np.asarray(val_accuracies, dtype=np.float64)
    if acc.ndim != 1 or acc.size == 0:
        raise ValueError("final_choice needs a non-empty list of accuracies")
    if np.isnan(acc).any():
        raise ValueError(f"accuracies contain NaN: {acc.tolist()}")
    return int(np.argmax(acc))
