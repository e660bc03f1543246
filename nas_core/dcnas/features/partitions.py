"""Partitions of the sorted rows for fan-out, and their reassembly (package docstring,
"Partitions")."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from nas_core.dcnas.features.batched import node_starts
from nas_core.dcnas.features.trie import PrefixTrie


def partition_rows(trie: PrefixTrie, parts: int, slack: float = 0.1) -> list[tuple[int, int]]:
    """At most ``parts`` contiguous ranges [lo, hi) of the trie's sorted
    rows with about equal numbers of trie nodes (the work of a walk). Each
    cut is placed at the start of a node of the shallowest depth that has
    one within ``slack`` x (nodes per part) of the balanced position, so a
    part holds whole subtrees (first-level nodes when their sizes allow);
    a cut at depth l makes the next part recompute l shared ancestors."""
    if parts < 1:
        raise ValueError(f"partitions = {parts}: need at least 1")
    u = trie.rows.shape[0]
    starts = node_starts(trie)
    before = np.r_[0, np.cumsum(starts.sum(1))]  # nodes starting before sorted row j
    total = int(before[-1])
    cuts = [0]
    for k in range(1, min(parts, u)):
        target = total * k / parts
        cut = _snapped_cut(starts, before, target, slack * total / parts)
        if cut > cuts[-1]:
            cuts.append(cut)
    cuts.append(u)
    return [(lo, hi) for lo, hi in zip(cuts, cuts[1:]) if hi > lo]


def _snapped_cut(starts: np.ndarray, before: np.ndarray, target: float, tolerance: float) -> int:
    """The node start nearest to ``target`` nodes, at the shallowest depth
    with one within ``tolerance`` (the last depth: nearest distinct row)."""
    for depth in range(starts.shape[1]):
        candidates = np.flatnonzero(starts[:, depth])
        best = int(candidates[np.argmin(np.abs(before[candidates] - target))])
        if abs(before[best] - target) <= tolerance or depth == starts.shape[1] - 1:
            return best
    raise AssertionError("unreachable")


def assemble_partitions(trie: PrefixTrie, ranges: Sequence[tuple[int, int]], parts: Sequence[np.ndarray]
                        ) -> np.ndarray:
    """Features (u, L, η) in the caller's row order from the features of
    each range of sorted rows (``parts[i]`` for ``trie.rows[lo:hi]``)."""
    if len(ranges) != len(parts) or not parts:
        raise ValueError(f"{len(parts)} partition results for {len(ranges)} ranges")
    covered = [lo for lo, _ in ranges] + [ranges[-1][1]]
    if covered[0] != 0 or covered[-1] != trie.rows.shape[0] or any(b != a for (_, b), (a, _) in
                                                                     zip(ranges, ranges[1:])):
        raise ValueError(f"partition ranges {list(ranges)} do not cover rows 0..{trie.rows.shape[0]} in order")
    out = np.empty((trie.rows.shape[0], *parts[0].shape[1:]), dtype=parts[0].dtype)
    for (lo, hi), features in zip(ranges, parts):
        if features.shape[0] != hi - lo:
            raise ValueError(f"partition [{lo}, {hi}) returned {features.shape[0]} rows")
        out[trie.order[lo:hi]] = features
    return out
