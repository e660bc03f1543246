"""Architecture-probability tables of the hierarchical space over its
flattened choice tokens (the encoding: every motif's edges, then the
cell's), in the ``tables["layers"]`` format of nas_core.spaces.layer_tables:
one row per token, as wide as the widest token; a token's columns beyond its
own number of ops must be 0.

No strategy learns such tables for this space (it has no supernet): DC-NAS
runs on it with the uniform tables (each token's ops equally likely).

Sampling (DC-NAS Algorithm 1, line 2): each token is drawn from its
renormalised row, *conditioned on the genotype being valid* (every node after
a DAG's input keeps an incoming edge that is not ``none``; genotype.py).
Validity is a separate condition per node, so the exact conditional draw
goes node by node over the node's incoming edges in order: while no earlier
edge of the node is present, edge k is ``none`` with probability
p_k(none) (1 - R_{k+1}) / (1 - R_k) and op o with p_k(o) / (1 - R_k), where
R_k is the product of p(none) over edges k.. of the node; once one edge is
present the rest are drawn from their plain rows. One uniform per token, so
a seed gives the same architectures for any chunk size. Eq. 9 is the
layer-wise sum of the chosen ops' probabilities (layer_tables.eq9_scores).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from nas_core.spaces.layer_tables import KEY, layers_table, normalise_probs

NONE_INDEX = 0


def uniform_table(bounds: np.ndarray) -> dict[str, np.ndarray]:
    """1 / bounds[l] on the first bounds[l] columns of row l, 0 elsewhere."""
    table = np.zeros((len(bounds), int(bounds.max())))
    for row, bound in enumerate(bounds):
        table[row, :bound] = 1.0 / bound
    return {KEY: table}


def token_table(tables: Mapping[str, np.ndarray], bounds: np.ndarray) -> np.ndarray:
    """``tables["layers"]`` checked against the tokens' bounds, rows renormalised."""
    probs = normalise_probs(layers_table(tables, len(bounds), int(bounds.max())))
    beyond = np.arange(probs.shape[1])[None, :] >= bounds[:, None]
    bad = (probs * beyond).sum(1) > 0
    if bad.any():
        token = int(np.flatnonzero(bad)[0])
        raise ValueError(f"tables[{KEY!r}] row {token} puts probability on columns >= {int(bounds[token])}: "
                         f"that token has only {int(bounds[token])} ops")
    return probs


def draw_valid(rng: np.random.Generator, probs: np.ndarray, node_tokens: Sequence[Sequence[int]], n: int,
               dtype: np.dtype) -> np.ndarray:
    """n rows of tokens, each node's incoming edges (``node_tokens``: token
    indices, in edge order) drawn conditioned on one of them being present."""
    u = rng.random((n, probs.shape[0]))
    out = np.empty((n, probs.shape[0]), dtype=dtype)
    for tokens in node_tokens:
        p_none = probs[list(tokens), NONE_INDEX]
        all_none = np.append(np.cumprod(p_none[::-1])[::-1], 1.0)  # R_k, R_{k+1}, ..., R_end = 1
        if all_none[0] >= 1.0:
            raise ValueError(f"architecture tables: tokens {list(tokens)} (the edges into one node) are 'none' with "
                             "probability 1, so no valid genotype can be drawn")
        present = np.zeros(n, dtype=bool)
        for k, token in enumerate(tokens):
            free = probs[token]
            cond = free / max(1.0 - all_none[k], 1e-300)
            cond[NONE_INDEX] = free[NONE_INDEX] * (1.0 - all_none[k + 1]) / max(1.0 - all_none[k], 1e-300)
            pick = np.where(present, _inverse_cdf(free, u[:, token]), _inverse_cdf(cond, u[:, token]))
            out[:, token] = pick
            present |= pick != NONE_INDEX
    return out


def _inverse_cdf(row: np.ndarray, u: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(row)
    last = int(np.flatnonzero(row > 0)[-1]) if (row > 0).any() else 0
    return np.minimum(np.searchsorted(cdf, u * cdf[-1], side="right"), last)


def plot_token_tables(probs: np.ndarray, groups: Sequence[tuple[str, Sequence[int], Sequence[str], Sequence[str]]],
                      title: str = ""):
    """One heatmap per group (title, token rows, row labels, op names):
    the motif tokens over the primitives, the cell tokens over the motifs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 0.18 * probs.shape[0] + 2), squeeze=False)
    for ax, (name, rows, labels, ops) in zip(axes[0], groups):
        image = ax.imshow(probs[list(rows)][:, :len(ops)], cmap="viridis", aspect="auto", vmin=0.0)
        ax.set_xticks(range(len(ops)), ops, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(rows)), labels, fontsize=6)
        ax.set_title(f"{title} {name}".strip())
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig
