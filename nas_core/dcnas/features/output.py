"""Eq. 7: the output features, walked per trie node, per naive path or batched."""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Literal, Mapping

import numpy as np
import torch
from torch import nn

from nas_core.dcnas.features.batched import BatchedPlan, BatchLimits, plan_batched_walk, walk_batched
from nas_core.dcnas.features.common import METHODS, MIN_BATCHED_CHUNK, Method, NodeSums, Progress, cosine
from nas_core.dcnas.features.trie import PrefixTrie, build_trie, check_rows, path_prefixes
from nas_core.supernet.base import Supernet


def loaded_epochs(supernet: nn.Module, states: Iterable[Mapping[str, torch.Tensor]]) -> Iterator[nn.Module]:
    """Yield ``supernet`` with each state_dict of ``states`` loaded in turn
    (the ``supernets`` argument of the extractors, for plain state_dicts)."""
    for state in states:
        supernet.load_state_dict(state)
        yield supernet


def set_bn_mode(model: nn.Module, bn: Literal["running", "batch"]) -> None:
    """Eval mode everywhere; BatchNorm layers in train mode for ``batch``."""
    if bn not in ("running", "batch"):
        raise ValueError(f"bn = {bn!r}: allowed 'running' or 'batch'")
    model.eval()
    if bn == "batch":
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.train()


def _images(batch: Any, device: torch.device) -> torch.Tensor:
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    return x.to(device, memory_format=torch.channels_last) if x.dim() == 4 else x.to(device)


def _walk_trie(supernet: Supernet, trie: PrefixTrie, state: Any, depth: int, lo: int, hi: int,
               sums: NodeSums) -> None:
    """Depth-first over the children (at ``depth``) of the prefix shared by
    sorted rows [lo, hi): one ``path_step`` per child node."""
    ids = trie.node_ids[lo:hi, depth]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) + lo
    ends = np.r_[starts[1:], hi]
    for start, end in zip(starts.tolist(), ends.tolist()):
        child, y = supernet.path_step(depth, state, trie.rows[start])
        sums.add(depth, int(trie.node_ids[start, depth]), y)
        if depth + 1 < trie.depth:
            _walk_trie(supernet, trie, child, depth + 1, start, end, sums)


def _walk_naive(supernet: Supernet, rows: np.ndarray, begin: Any, sums: NodeSums) -> None:
    """Every architecture from the ``path_begin`` state, no sharing."""
    depth = len(sums.rows)
    for index, row in enumerate(rows):
        state = begin
        for layer in range(depth):
            state, y = supernet.path_step(layer, state, row)
            sums.add(layer, index, y)


def epoch_layer_outputs(supernet: Supernet, probe: Iterable, rows: np.ndarray, device: torch.device,
                        trie: PrefixTrie | None = None, plan: BatchedPlan | None = None) -> list[torch.Tensor]:
    """o^{l} for the current weights: per depth l a (nodes, C_l) float64
    tensor of GAP outputs averaged over the probe; nodes are trie nodes when
    ``trie`` is given (walked per node, or batched by ``plan``), else the
    (checked) ``rows`` (naive path)."""
    depth = supernet.path_depth()
    sums = NodeSums(trie.num_nodes if trie is not None else [rows.shape[0]] * depth)
    with torch.inference_mode():
        for batch in probe:
            x = _images(batch, device)
            begin = supernet.path_begin(x)
            if plan is not None and x.shape[0] >= MIN_BATCHED_CHUNK:
                walk_batched(supernet, trie, plan, begin, sums)
            elif trie is not None:
                _walk_trie(supernet, trie, begin, 0, 0, trie.rows.shape[0], sums)
            else:
                _walk_naive(supernet, rows, begin, sums)
            sums.count += x.shape[0]
    return sums.means()


def check_method(method: str, bn: str) -> None:
    """A ValueError naming ``method`` unless it is known and fits ``bn``."""
    if method not in METHODS:
        raise ValueError(f"method = {method!r}: allowed {', '.join(map(repr, METHODS))}")
    if method == "batched" and bn != "running":
        raise ValueError(f"method = 'batched' needs bn = 'running', got bn = {bn!r}: a stacked call would take "
                         "BatchNorm statistics over several nodes; use method 'trie' with bn 'batch'")


def extract_output_features(supernets: Iterable[Supernet], rows: np.ndarray, probe: Iterable,
                            device: torch.device, bn: Literal["running", "batch"] = "running",
                            method: Method = "trie", progress: Progress | None = None,
                            num_epochs: int | None = None, limits: BatchLimits | None = None) -> np.ndarray:
    """Eq. 7 features (u, L, η) float32 of the encoded ``rows`` (u, width).

    ``supernets`` yields the supernet with each chosen epoch's weights loaded
    (module docstring); each is moved to ``device`` in channels-last layout.
    ``probe`` is re-iterated once per epoch and yields image batches (or
    (x, y) pairs); a batch is one chunk of the depth-first walk. ``method``:
    ``trie`` (one ``path_step`` per node), ``batched`` (the nodes of a depth
    that apply the same function in one call, within ``limits``; default
    :class:`BatchLimits`; equal to ``trie`` bit for bit, module docstring)
    or ``naive`` (no sharing; for tests and the benchmark)."""
    check_method(method, bn)
    if progress is not None:
        supernets = progress(supernets, desc=f"features ({method}, {len(rows)} archs)", total=num_epochs)
    checked: np.ndarray | None = None
    trie: PrefixTrie | None = None
    plan: BatchedPlan | None = None
    first: list[torch.Tensor] | None = None
    columns: list[list[torch.Tensor]] = []
    for supernet in supernets:
        if checked is None:
            checked = check_rows(supernet, rows)
            trie = build_trie(checked, path_prefixes(supernet)) if method != "naive" else None
            plan = plan_batched_walk(supernet, trie, limits) if method == "batched" else None
        supernet.to(device, memory_format=torch.channels_last)
        set_bn_mode(supernet, bn)
        outputs = epoch_layer_outputs(supernet, probe, checked, device, trie, plan)
        first = outputs if first is None else first
        columns.append([cosine(f, o).cpu() for f, o in zip(first, outputs)])
    if not columns:
        raise ValueError("no checkpoints given: Eq. 7 needs at least one epoch")
    return _assemble(columns, trie, len(checked))


def _assemble(columns: list[list[torch.Tensor]], trie: PrefixTrie | None, count: int) -> np.ndarray:
    """Gather per-row features (u, L, η) from per-node (or per-row) columns."""
    depth = len(columns[0])
    out = np.empty((count, depth, len(columns)), dtype=np.float32)
    for layer in range(depth):
        per_node = torch.stack([col[layer] for col in columns], dim=1).numpy()
        if trie is None:
            out[:, layer, :] = per_node
        else:
            out[trie.order, layer, :] = per_node[trie.node_ids[:, layer]]
    if not np.isfinite(out).all():
        raise FloatingPointError("feature extraction produced NaN/inf")
    return out
