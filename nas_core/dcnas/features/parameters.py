"""Eq. 6: the parameter features (package docstring)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np
import torch

from nas_core.dcnas.features.common import Progress, cosine_from_sums
from nas_core.dcnas.features.trie import PrefixTrie, supernet_trie
from nas_core.supernet.base import Supernet


@dataclass(frozen=True)
class _ParamKeys:
    """Every name the rows use (``names``), the distinct name tuples as
    ``(member_tuple[k], member_name[k])`` pairs (``num_tuples`` of them) and,
    per depth, the tuple id of each trie node (``node_tuple``)."""

    names: list[str]
    num_tuples: int
    member_tuple: np.ndarray
    member_name: np.ndarray
    node_tuple: list[np.ndarray]


def _parameter_keys(supernet: Supernet, trie: PrefixTrie) -> _ParamKeys:
    """``path_parameter_names`` once per trie node (the names a layer uses
    depend only on its prefix), deduplicated into tuples."""
    ids: dict[tuple[str, ...], int] = {}
    node_tuple = []
    for depth in range(trie.depth):
        column = trie.node_ids[:, depth]
        starts = np.flatnonzero(np.r_[True, column[1:] != column[:-1]])
        keys = [tuple(supernet.path_parameter_names(depth, trie.rows[s])) for s in starts.tolist()]
        node_tuple.append(np.array([ids.setdefault(k, len(ids)) for k in keys], dtype=np.int64))
    names = sorted({n for t in ids for n in t})
    position = {n: i for i, n in enumerate(names)}
    pairs = [(tid, position[n]) for t, tid in ids.items() for n in t]
    member = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    return _ParamKeys(names, len(ids), member[:, 0], member[:, 1], node_tuple)


def _flat(state: Mapping[str, torch.Tensor], name: str) -> torch.Tensor:
    if name not in state:
        raise ValueError(f"path_parameter_names returned {name!r}, which is not in the supernet's state_dict")
    return state[name].detach().reshape(-1).to("cpu", torch.float64, copy=True)


def _tuple_cosines(keys: _ParamKeys, first: Mapping[str, torch.Tensor],
                   state: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """cos(θ^1, θ^e) per name tuple: the dot product and squared norms of a
    concatenation are the sums of those of its parts."""
    stats = np.zeros((len(keys.names), 3), dtype=np.float64)
    for i, name in enumerate(keys.names):
        a, b = first[name], _flat(state, name)
        stats[i] = [float((a * b).sum()), float((a * a).sum()), float((b * b).sum())]
    dot, na2, nb2 = (torch.from_numpy(np.bincount(keys.member_tuple, stats[keys.member_name, j],
                                                  minlength=keys.num_tuples)) for j in range(3))
    return cosine_from_sums(dot, na2.sqrt(), nb2.sqrt())


def extract_param_features(supernets: Iterable[Supernet], rows: np.ndarray,
                           progress: Progress | None = None, num_epochs: int | None = None) -> np.ndarray:
    """Eq. 6 features (u, L, η) float32 of the encoded ``rows``; ``supernets``
    as for :func:`extract_output_features`."""
    if progress is not None:
        supernets = progress(supernets, desc="features (params)", total=num_epochs)
    trie: PrefixTrie | None = None
    keys: _ParamKeys | None = None
    first: dict[str, torch.Tensor] = {}
    columns: list[torch.Tensor] = []
    for supernet in supernets:
        state = supernet.state_dict()
        if trie is None:
            trie = supernet_trie(supernet, rows)
            keys = _parameter_keys(supernet, trie)
            first = {name: _flat(state, name) for name in keys.names}
        columns.append(_tuple_cosines(keys, first, state))
    if not columns:
        raise ValueError("no checkpoints given: Eq. 6 needs at least one epoch")
    per_tuple = torch.stack(columns, dim=1).numpy()
    out = np.empty((trie.rows.shape[0], trie.depth, len(columns)), dtype=np.float32)
    for depth in range(trie.depth):
        out[trie.order, depth, :] = per_tuple[keys.node_tuple[depth][trie.node_ids[:, depth]]]
    if not np.isfinite(out).all():
        raise FloatingPointError("feature extraction produced NaN/inf")
    return out
