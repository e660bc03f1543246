"""Figures a person would rather look at than read: the clustered feature
space (2-D PCA), mean F_{l,e} curves per cluster, and accuracy against
latency / FLOPs of the finalists. Every function returns a matplotlib Figure
(Agg backend, no display needed); the caller saves and logs it."""
from __future__ import annotations

import math
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402


def _colors(k: int):
    cmap = plt.get_cmap("tab10" if k <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(k)]


def cluster_scatter(features: np.ndarray, labels: np.ndarray, representatives: Sequence[int],
                    max_points: int = 20_000, seed: int = 0) -> plt.Figure:
    """PCA of the flattened features (at most ``max_points`` plotted, seeded
    subsample; PCA fitted on them), coloured by cluster; representatives
    as black-edged stars."""
    x = features.reshape(features.shape[0], -1).astype(np.float64)
    rng = np.random.default_rng(seed)
    shown = np.sort(rng.choice(x.shape[0], size=min(max_points, x.shape[0]), replace=False))
    reps = np.asarray(representatives, dtype=np.int64)
    n_comp = min(2, x.shape[1], shown.size)
    pca = PCA(n_components=n_comp, random_state=seed).fit(x[shown])
    xy = _pad2(pca.transform(x[shown]))
    rep_xy = _pad2(pca.transform(x[reps]))
    k = int(labels.max()) + 1
    colors = _colors(k)
    fig, ax = plt.subplots(figsize=(6.5, 5))
    for c in range(k):
        sel = labels[shown] == c
        ax.scatter(xy[sel, 0], xy[sel, 1], s=6, alpha=0.5, color=colors[c], label=f"cluster {c}")
    ax.scatter(rep_xy[:, 0], rep_xy[:, 1], marker="*", s=220, c=[colors[c] for c in range(k)],
               edgecolors="black", linewidths=1.2, label="representative", zorder=3)
    ratio = pca.explained_variance_ratio_
    ax.set_xlabel(f"PC1 ({ratio[0]:.0%} of variance)")
    ax.set_ylabel(f"PC2 ({ratio[1]:.0%} of variance)" if ratio.size > 1 else "PC2")
    ax.set_title(f"DC-NAS feature space: {x.shape[0]} architectures, K = {k}")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def _pad2(xy: np.ndarray) -> np.ndarray:
    return xy if xy.shape[1] == 2 else np.hstack([xy, np.zeros((xy.shape[0], 2 - xy.shape[1]))])


def cluster_mean_curves(features: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None,
                        epochs: Sequence[int] | None = None) -> plt.Figure:
    """One panel per layer: the (count-weighted) mean F_{l,e} of each
    cluster against the epoch."""
    s, num_layers, eta = features.shape
    w = np.ones(s) if weights is None else np.asarray(weights, dtype=np.float64)
    xs = list(epochs) if epochs is not None else list(range(1, eta + 1))
    k = int(labels.max()) + 1
    colors = _colors(k)
    cols = min(num_layers, 4)
    rows = math.ceil(num_layers / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.5 * rows), squeeze=False, sharex=True)
    for c in range(k):
        sel = labels == c
        mean = np.tensordot(w[sel], features[sel], axes=1) / w[sel].sum()
        for layer in range(num_layers):
            axes.flat[layer].plot(xs, mean[layer], marker=".", color=colors[c], label=f"cluster {c}")
    for layer, ax in enumerate(axes.flat):
        if layer >= num_layers:
            ax.set_visible(False)
            continue
        ax.set_title(f"layer {layer + 1}", fontsize=9)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.supxlabel("pre-training epoch")
    fig.supylabel("mean F (cosine to first epoch)")
    fig.tight_layout()
    return fig


def accuracy_vs_cost(rows: Sequence[dict], chosen: str | None = None) -> plt.Figure:
    """Test accuracy against latency (ms) and FLOPs of the finalists; each
    row needs name, test_acc, latency_ms (None: not measured), flops. The chosen network N* is
    ringed; a row of kind ``baseline`` is drawn as a square, one of kind
    ``random`` (the random control) as a grey cross."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "latency_ms", "latency (ms)"), (axes[1], "flops", "FLOPs")):
        for row in (r for r in rows if r.get(key) is not None):
            kind = row.get("kind", "baseline" if row["name"] == "baseline" else "dcnas")
            style = {"baseline": {"marker": "s"}, "random": {"marker": "x", "color": "0.5"}}.get(kind, {})
            ax.scatter(row[key], row["test_acc"], s=60, **{"marker": "o", **style})
            ax.annotate(row["name"], (row[key], row["test_acc"]), fontsize=8, xytext=(4, 4),
                        textcoords="offset points")
            if row["name"] == chosen:
                ax.scatter(row[key], row["test_acc"], s=260, facecolors="none", edgecolors="red", linewidths=1.5)
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
    fig.suptitle("Finalists (red ring: N*, Eq. 10)")
    fig.tight_layout()
    return fig
