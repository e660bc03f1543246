"""The prefix trie of the unique architectures (package docstring, "Prefix sharing")."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from nas_core.supernet.base import Supernet


@dataclass(frozen=True)
class PrefixTrie:
    """Rows sorted lexicographically (``rows`` (u, width)), ``order[j]`` =
    row of the caller's array stored at sorted position j, ``prefixes[l]`` =
    entries layer l depends on, and ``node_ids[j, l]`` = id (within depth l)
    of the prefix ``rows[j, :prefixes[l]]``."""

    rows: np.ndarray
    order: np.ndarray
    node_ids: np.ndarray
    num_nodes: tuple[int, ...]
    prefixes: tuple[int, ...]

    @property
    def depth(self) -> int:
        return len(self.prefixes)

    @property
    def total_nodes(self) -> int:
        """``path_step`` calls per probe chunk and epoch with sharing."""
        return int(sum(self.num_nodes))

    @property
    def naive_nodes(self) -> int:
        """``path_step`` calls per probe chunk and epoch without sharing."""
        return int(self.rows.shape[0] * self.depth)


def _check_prefixes(prefixes: Sequence[int], width: int) -> tuple[int, ...]:
    prefixes = tuple(int(p) for p in prefixes)
    if not prefixes:
        raise ValueError("prefixes: need at least one layer")
    bad = [p for p in prefixes if not 0 <= p <= width]
    if bad:
        raise ValueError(f"prefixes {list(prefixes)}: {bad[0]} is outside 0..{width} (the row width)")
    if any(b < a for a, b in zip(prefixes, prefixes[1:])):
        raise ValueError(f"prefixes {list(prefixes)}: must be non-decreasing in the layer")
    return prefixes


def build_trie(rows: np.ndarray, prefixes: Sequence[int]) -> PrefixTrie:
    """Prefix trie of ``rows`` (u, width) for layers depending on the first
    ``prefixes[l]`` entries (``[supernet.path_prefix(l) for l in range(L)]``),
    in O(u · width)."""
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[0] < 1 or rows.shape[1] < 1:
        raise ValueError(f"architectures must be a non-empty (count, encoding length) array, got shape {rows.shape}")
    prefixes = _check_prefixes(prefixes, rows.shape[1])
    order = np.lexsort(rows.T[::-1])
    rows = rows[order]
    new_prefix = np.zeros(rows.shape[0], dtype=bool)
    new_prefix[0] = True
    node_ids = np.empty((rows.shape[0], len(prefixes)), dtype=np.int64)
    done = 0
    for depth, prefix in enumerate(prefixes):
        if prefix > done:
            new_prefix[1:] |= (rows[1:, done:prefix] != rows[:-1, done:prefix]).any(1)
            done = prefix
        node_ids[:, depth] = np.cumsum(new_prefix) - 1
    num_nodes = tuple(int(n) for n in node_ids[-1] + 1)
    return PrefixTrie(rows=rows, order=order, node_ids=node_ids, num_nodes=num_nodes, prefixes=prefixes)


def path_prefixes(supernet: Supernet) -> list[int]:
    """``[supernet.path_prefix(l) for l in range(supernet.path_depth())]``."""
    depth = supernet.path_depth()
    if depth < 1:
        raise ValueError(f"path_depth() = {depth}: a supernet needs at least one layer for features")
    return [supernet.path_prefix(l) for l in range(depth)]


def supernet_trie(supernet: Supernet, rows: np.ndarray) -> PrefixTrie:
    """The trie of ``rows`` after the supernet has checked them."""
    return build_trie(check_rows(supernet, rows), path_prefixes(supernet))


def check_rows(supernet: Supernet, rows: np.ndarray) -> np.ndarray:
    """``rows`` as int64 (u, width) after the supernet's own check."""
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[0] < 1:
        raise ValueError(f"architectures must be a non-empty (count, encoding length) array, got shape {rows.shape}")
    return np.asarray(supernet.check_rows(rows), dtype=np.int64)
