"""StacNAS's operator clustering (stacnas.md §3.2, §3.4.1, appendix A);
the search itself is
nas_core/strategies/stacnas.py.

Operator correlation (appendix A). The trained DARTS supernet is run on a
fixed set of training images; on every edge of every cell the output of
each candidate op (all but ``none`` and ``skip_connect``) is flattened over
the images, and the Pearson correlation between every pair of ops is
computed on that edge (streamed: sums of x and x x^T in float64, so memory
holds one edge's outputs of one batch). The matrix that is clustered is the
mean of the per-edge matrices (the paper shows the first edge of the first
cell and says the correlations come from all edges; the mean is our
choice). Parametric ops only correlate once the supernet has trained (their
channels start in arbitrary order; the shared gradient of the mixed op
aligns them): after a few epochs on digits only the parameter-free pools
correlate (rho about 0.85, convolutions about 0), so a short cluster phase
leaves every convolution in a group of its own; ``clustering: published``
is the alternative.

Clustering. Agglomerative clustering (scipy, average linkage) on the
distance 1 - rho; ops are cut into groups at distance 1 - ``threshold``, so
two groups merge while their mean cross-correlation is at least
``threshold``. The paper calls the S1 pairs correlated at 0.52 (pools),
0.38 (SepConv) and 0.27 (DilConv) groups, so our default threshold is
0.25. ``skip_connect`` is not correlated (appendix A excludes it) and is a
group of its own, as in the paper's S1, S3, S4 and S5 tables (its S2 table
puts the pools with it; :data:`PUBLISHED_GROUPS` keeps that as published).

Key operator of a group (§4.1): a 3x3 member where there is one ("for fair
competition among groups"), among those the one with the largest mean
correlation to the other members, ties to the op-set order.

Gradient confusion (appendix C) is a training diagnostic: nas_core/train/confusion.py.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform
from torch import nn

from nas_core.spaces.cell.genotype import SKIP, ZERO

EXCLUDED = (ZERO, SKIP)

# Appendix A's table: per op set, the groups with their key operator first.
PUBLISHED_GROUPS: dict[str, tuple[tuple[str, ...], ...]] = {
    "S1": (("max_pool_3x3", "avg_pool_3x3"), (SKIP,), ("sep_conv_3x3", "sep_conv_5x5"),
           ("dil_conv_3x3", "dil_conv_5x5")),
    "S2": ((SKIP, "max_pool_3x3", "max_pool_5x5", "avg_pool_3x3", "avg_pool_5x5"),
           ("sep_conv_3x3", "sep_conv_5x5")),
    "S3": (("max_pool_3x3",), (SKIP,), ("sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7"),
           ("dil_conv_3x3", "dil_conv_5x5")),
    "S4": ((SKIP,), ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")),
    "S5": ((SKIP,), ("sep_conv_3x3",)),
}
PUBLISHED_GROUPS["darts"] = PUBLISHED_GROUPS["S1"]


@dataclass(frozen=True)
class OpGroup:
    """A group of correlated ops: its key operator (stage 1's op) and all
    members (stage 2's ops), members in op-set order."""

    key: str
    members: tuple[str, ...]


def candidate_ops(op_names: Sequence[str]) -> tuple[str, ...]:
    """The ops whose outputs are correlated: all but none and skip."""
    return tuple(n for n in op_names if n not in EXCLUDED)


def published_groups(op_set: str, op_names: Sequence[str]) -> tuple[OpGroup, ...]:
    """Appendix A's groups of op set ``op_set`` (members in op-set order)."""
    if op_set not in PUBLISHED_GROUPS:
        raise ValueError(f"op set {op_set!r} has no published StacNAS groups "
                         f"(published: {', '.join(sorted(PUBLISHED_GROUPS))})")
    order = {name: i for i, name in enumerate(op_names)}
    return _sorted(tuple(OpGroup(g[0], tuple(sorted(g, key=order.__getitem__))) for g in PUBLISHED_GROUPS[op_set]),
                   order)


# ---------------------------------------------------------------- correlation

class _EdgeMoments:
    """Running sums for the Pearson correlation of n flattened outputs."""

    def __init__(self, n: int) -> None:
        self.count, self.sum, self.outer = 0, np.zeros(n), np.zeros((n, n))

    def add(self, outputs: Sequence[torch.Tensor]) -> None:
        x = torch.stack([o.detach().reshape(-1) for o in outputs]).double().cpu()
        self.count += x.shape[1]
        self.sum += x.sum(1).numpy()
        self.outer += (x @ x.T).numpy()

    def correlation(self) -> np.ndarray:
        mean = self.sum / max(self.count, 1)
        cov = self.outer / max(self.count, 1) - np.outer(mean, mean)
        std = np.sqrt(np.clip(np.diag(cov), 0.0, None))
        denom = np.outer(std, std)
        rho = np.divide(cov, denom, out=np.zeros_like(cov), where=denom > 0)
        np.fill_diagonal(rho, 1.0)
        return np.clip(rho, -1.0, 1.0)


@torch.no_grad()
def operator_correlation(network: nn.Module, forward: Callable[[torch.Tensor], object],
                         images: Iterable[torch.Tensor], op_names: Sequence[str]) -> np.ndarray:
    """Per-edge Pearson correlation (n_edges, n, n) of the candidate ops
    ``candidate_ops(op_names)`` over ``images`` (an iterable of batches),
    for every mixed op of ``network`` (a SearchNetwork: cells in order, 14
    edges each) holding all the candidates. ``forward(x)`` runs the
    network (with its op weights); it is put in eval mode and restored."""
    from nas_core.supernet.cell import MixedOp

    names = candidate_ops(op_names)
    edges = [m for m in network.modules() if isinstance(m, MixedOp) and set(names) <= set(m.op_names)]
    if not edges:
        raise ValueError(f"no mixed op of the network holds every candidate op ({', '.join(names)})")
    moments = [_EdgeMoments(len(names)) for _ in edges]
    captured: dict[int, dict[int, torch.Tensor]] = {i: {} for i in range(len(edges))}
    hooks = []
    for i, mixed in enumerate(edges):
        for j, name in enumerate(names):
            op = mixed.ops[mixed.op_names.index(name)]
            hooks.append(op.register_forward_hook(_store(captured[i], j)))
        hooks.append(mixed.register_forward_hook(_flush(captured[i], moments[i], len(names))))
    was_training = network.training
    network.eval()
    try:
        for x in images:
            forward(x)
    finally:
        for hook in hooks:
            hook.remove()
        network.train(was_training)
    return np.stack([m.correlation() for m in moments])


def _store(slot: dict[int, torch.Tensor], j: int):
    def hook(module, inputs, output):
        slot[j] = output
    return hook


def _flush(slot: dict[int, torch.Tensor], moments: _EdgeMoments, n: int):
    def hook(module, inputs, output):
        if len(slot) == n:
            moments.add([slot[j] for j in range(n)])
        slot.clear()
    return hook


# ---------------------------------------------------------------- clustering

def kernel_size(name: str) -> int | None:
    match = re.search(r"_(\d+)x\1$", name)
    return int(match.group(1)) if match else None


def cluster_ops(correlation: np.ndarray, op_names: Sequence[str], threshold: float) -> tuple[OpGroup, ...]:
    """Groups of the op set ``op_names`` from the (n, n) correlation of its
    candidate ops (module docstring); skip is a group of its own, none is
    in no group. Groups are ordered by their first member in the op set."""
    names = candidate_ops(op_names)
    rho = np.asarray(correlation, dtype=np.float64)
    if rho.shape != (len(names), len(names)):
        raise ValueError(f"correlation: expected shape {(len(names),) * 2} for ops {names}, got {rho.shape}")
    labels = _labels(rho, threshold)
    order = {name: i for i, name in enumerate(op_names)}
    groups = []
    for label in sorted(set(labels)):
        idx = [i for i, lab in enumerate(labels) if lab == label]
        groups.append(OpGroup(_key(idx, names, rho), tuple(names[i] for i in idx)))
    if SKIP in op_names:
        groups.append(OpGroup(SKIP, (SKIP,)))
    return _sorted(tuple(groups), order)


def _labels(rho: np.ndarray, threshold: float) -> list[int]:
    if len(rho) < 2:
        return [0] * len(rho)
    distance = np.clip(1.0 - (rho + rho.T) / 2.0, 0.0, 2.0)
    np.fill_diagonal(distance, 0.0)
    tree = linkage(squareform(distance, checks=False), method="average")
    return [int(v) for v in fcluster(tree, t=1.0 - threshold, criterion="distance")]


def _key(idx: list[int], names: Sequence[str], rho: np.ndarray) -> str:
    threes = [i for i in idx if kernel_size(names[i]) == 3] or idx
    others = lambda i: np.mean([rho[i, j] for j in idx if j != i]) if len(idx) > 1 else 0.0  # noqa: E731
    return names[max(threes, key=lambda i: (others(i), -i))]


def _sorted(groups: tuple[OpGroup, ...], order: Mapping[str, int]) -> tuple[OpGroup, ...]:
    return tuple(sorted(groups, key=lambda g: min(order[m] for m in g.members)))


def group_labels(groups: Sequence[OpGroup], op_names: Sequence[str]) -> np.ndarray:
    """(n_ops,) group index of each op of the op set, -1 for ops in none."""
    labels = np.full(len(op_names), -1, dtype=np.int64)
    for g, group in enumerate(groups):
        for member in group.members:
            labels[list(op_names).index(member)] = g
    return labels


# ---------------------------------------------------------------- figure

def plot_correlation(correlation: np.ndarray, op_names: Sequence[str], groups: Sequence[OpGroup],
                     title: str = "") -> object:
    """Heat-map of the candidate ops' correlation (ops ordered by group,
    white lines between groups, key operators starred)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(candidate_ops(op_names))
    ordered = [m for g in groups for m in g.members if m in names]
    idx = [names.index(m) for m in ordered]
    rho = np.asarray(correlation)[np.ix_(idx, idx)]
    keys = {g.key for g in groups}
    labels = [f"{m} *" if m in keys else m for m in ordered]
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(names), 0.8 + 0.6 * len(names)))
    image = ax.imshow(rho, vmin=-1, vmax=1, cmap="RdBu_r")
    for i in range(len(ordered)):
        for j in range(len(ordered)):
            ax.text(j, i, f"{rho[i, j]:.2f}", ha="center", va="center", fontsize=7)
    edge = -0.5
    for g in groups:
        edge += sum(m in names for m in g.members)
        if -0.5 < edge < len(ordered) - 0.5:
            ax.axhline(edge, color="white", lw=2)
            ax.axvline(edge, color="white", lw=2)
    ax.set_xticks(range(len(ordered)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(ordered)), labels, fontsize=8)
    ax.set_title(title or "operator correlation (* key operator)", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig
