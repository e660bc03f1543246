"""Eq. 5: k-means over the feature representations,

    argmin_G Σ_k Σ_{N ∈ G_k} ||F(N) − F(Ñ_k)||²,

with scikit-learn. Each architecture's (L, η) feature matrix is flattened to
one L·η vector. Choices where the paper is silent:
- ``KMeans`` (Lloyd, k-means++ init, ``n_init`` restarts) up to
  ``minibatch_threshold`` points, ``MiniBatchKMeans`` above it (the paper
  clusters 10^7 points "in a few minutes").
- Unique architectures are clustered once each with their duplicate counts as
  ``sample_weight``, which gives the same objective as repeating them.
- The silhouette score is computed on a seeded sample of
  ``silhouette_sample`` points (it is quadratic); None when K = 1 or when
  the sample has fewer than 2 clusters.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.metrics import silhouette_score


@dataclass
class ClusterResult:
    labels: np.ndarray  # (s,) cluster of each row, 0..K-1
    centers: np.ndarray  # (K, L*η)
    inertia: float
    sizes: np.ndarray  # (K,) weighted sizes (duplicates counted)
    silhouette: float | None


def flatten_features(features: np.ndarray) -> np.ndarray:
    """(s, L, η) -> (s, L·η) float32, rejecting NaN/inf."""
    features = np.asarray(features)
    if features.ndim != 3:
        raise ValueError(f"features must be (architectures, layers, epochs), got shape {features.shape}")
    flat = features.reshape(features.shape[0], -1).astype(np.float32, copy=False)
    if not np.isfinite(flat).all():
        raise ValueError("features contain NaN/inf: rerun dcnas_features")
    return flat


def _check_k(k: int, s: int) -> None:
    if k < 1:
        raise ValueError(f"dcnas_cluster.k = {k}: must be >= 1")
    if k > s:
        raise ValueError(f"dcnas_cluster.k = {k}: more clusters than architectures ({s}); "
                         f"use k <= {s} or draw more samples (dcnas_sample.num_samples)")


def _estimator(k: int, seed: int, s: int, minibatch_threshold: int):
    if s > minibatch_threshold:
        return MiniBatchKMeans(n_clusters=k, random_state=seed, batch_size=4096, n_init=3,
                               max_no_improvement=20)
    return KMeans(n_clusters=k, random_state=seed, n_init=3)


def sampled_silhouette(x: np.ndarray, labels: np.ndarray, sample: int, seed: int) -> float | None:
    """Silhouette on at most ``sample`` points (seeded); None if undefined."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(x.shape[0], size=min(sample, x.shape[0]), replace=False)
    n_labels = np.unique(labels[idx]).size
    if n_labels < 2 or n_labels >= idx.size:
        return None
    return float(silhouette_score(x[idx], labels[idx]))


def cluster_features(features: np.ndarray, k: int, seed: int, minibatch_threshold: int = 100_000,
                     silhouette_sample: int = 2000, weights: np.ndarray | None = None) -> ClusterResult:
    """Eq. 5 on features (s, L, η); ``weights`` = duplicate counts."""
    x = flatten_features(features)
    s = x.shape[0]
    _check_k(k, s)
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (s,) or (weights <= 0).any():
            raise ValueError(f"weights must be {s} positive counts, got shape {weights.shape}")
    distinct = np.unique(x, axis=0).shape[0] if s <= minibatch_threshold else s
    if k > distinct:
        raise ValueError(f"dcnas_cluster.k = {k}: only {distinct} distinct feature vectors among {s} "
                         f"architectures; use k <= {distinct}")
    model = _estimator(k, seed, s, minibatch_threshold).fit(x, sample_weight=weights)
    labels = model.labels_.astype(np.int64)
    sizes = np.bincount(labels, weights=weights, minlength=k)
    return ClusterResult(labels=labels, centers=model.cluster_centers_.astype(np.float32),
                         inertia=float(model.inertia_), sizes=np.rint(sizes).astype(np.int64),
                         silhouette=sampled_silhouette(x, labels, silhouette_sample, seed))
