"""Feature representation of sampled sub-networks (DC-NAS §3.2), for any
one-shot supernet implementing nas_core.supernet.base.Supernet.

A sub-network is an encoded row of its space (``SearchSpace.encode``, the
rows of DC-NAS's ``archs.npy``); its "layers" are the supernet's path
layers 0..L-1 (``path_depth()``: searchable layers of the layer-wise space,
cells of the cell space).

Eq. 7 (``method: output``, the default): for architecture i, layer l and
epoch e of the η chosen checkpoints,

    F_{l,e}(N_i) = <o_i^{l,1}, o_i^{l,e}> / (||o_i^{l,1}|| · ||o_i^{l,e}||),

where o_i^{l,e} is the output of layer l (``path_step``'s second value),
global-average-pooled over space (the paper applies GAP "before calculating
F") and averaged over the probe images, computed with the epoch-e supernet
weights using only i's choices in layers 1..l. "Epoch 1" is the first of the
chosen checkpoints, so column 0 of every feature row is 1.

Eq. 6 (``method: params``): the same cosine between the epoch-1 and epoch-e
parameters that i uses at layer l (``path_parameter_names``: trainable
parameters, flattened and concatenated in the order given; BatchNorm running
statistics are buffers and are left out). The cosine is computed per
distinct tuple of names (the layer-wise space: once per (layer, op)) from
per-parameter dot products and squared norms, so memory holds one float64
copy of the epoch-1 parameters.

Cosine of zero vectors: F = 1 when both vectors are zero (a parameter-free
op such as ``skip`` in Eq. 6 "does not change", and a layer whose output is
identically zero has not moved) and F = 0 when only one of them is zero.

Prefix sharing: layer l's output depends only on the first
``path_prefix(l)`` entries of a row (non-decreasing in l), so architectures
that agree on those entries share it. The unique architectures are arranged
in a prefix trie (rows sorted lexicographically; a node at depth l per
distinct ``row[:path_prefix(l)]``; the layer-wise space has prefixes 1..L,
the cell space 16 for the cells before the first reduction, then 32) and
each node runs ``path_step`` once per probe chunk and epoch, depth first,
so at most L states of one chunk are alive at any time. ``path_step`` must
therefore leave its input state unchanged (siblings reuse it). GAP outputs
are accumulated in float64 as sums per node over the probe chunks. Weights
and probe images are kept channels-last (about 3x faster for the depthwise
blocks on a CPU; the supernet is left in that layout). ``plan_chunk_size``
bounds the chunk by a memory budget. The naive path
(``extract_output_features(..., method="naive")``) starts every
architecture from the ``path_begin`` state of the chunk and runs all its
layers, sharing nothing; it gives the same numbers and exists for tests and
the benchmark.

Checkpoints: both extractors take ``supernets``, an iterable that yields the
supernet once per chosen epoch with that epoch's weights loaded (usually the
same module each time, e.g. ``(strategy.load_supernet(s) for s in states)``,
or :func:`loaded_epochs` for plain state_dicts); it is consumed lazily, so
a generator keeps one checkpoint in memory at a time.

BatchNorm statistics (``bn``): ``running`` evaluates the supernet in eval
mode, so each op normalises with the running statistics it stored during
pre-training; ``batch`` puts only the BatchNorm layers in train mode, so each
op normalises with the statistics of the current probe chunk (the result then
depends on the chunk size; under ``inference_mode`` the stored running
statistics are neither read nor updated).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from nas_core.supernet.base import Supernet

Progress = Callable[..., Iterable]


def cosine_to_first(outputs: torch.Tensor) -> torch.Tensor:
    """F_e = cos(o^1, o^e) along the epoch axis: ``outputs`` (..., η, C) ->
    (..., η). Zero vectors: F = 1 if both are zero, 0 if only one is."""
    if outputs.dim() < 2:
        raise ValueError(f"cosine_to_first expects (..., epochs, channels), got shape {tuple(outputs.shape)}")
    return cosine(outputs[..., :1, :], outputs)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity over the last axis (broadcasting), in float64, with
    the zero-vector convention of the module docstring."""
    a, b = a.double(), b.double()
    return _cosine_from_sums((a * b).sum(-1), a.norm(dim=-1), b.norm(dim=-1))


def _cosine_from_sums(dot: torch.Tensor, na: torch.Tensor, nb: torch.Tensor) -> torch.Tensor:
    """dot / (na · nb) with the zero-vector convention, clamped to [-1, 1]."""
    both_zero = (na == 0) & (nb == 0)
    denom = torch.where(both_zero | (na * nb == 0), torch.ones_like(dot), na * nb)
    out = torch.where(both_zero, torch.ones_like(dot), dot / denom)
    return out.clamp(-1.0, 1.0)


# ---------------------------------------------------------------- prefix trie

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


# ---------------------------------------------------------------- Eq. 7

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


def gap(y: torch.Tensor) -> torch.Tensor:
    """Global average pooling over all axes after the channel axis."""
    return y.flatten(2).mean(2) if y.dim() > 2 else y


def _images(batch: Any, device: torch.device) -> torch.Tensor:
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    return x.to(device, memory_format=torch.channels_last) if x.dim() == 4 else x.to(device)


class _NodeSums:
    """Per-depth sums of GAP outputs, one row per trie node (or per
    architecture on the naive path)."""

    def __init__(self, rows_per_depth: Iterable[int]) -> None:
        self.rows = list(rows_per_depth)
        self.sums: list[torch.Tensor | None] = [None] * len(self.rows)
        self.count = 0

    def add(self, depth: int, row: int, y: torch.Tensor) -> None:
        pooled = gap(y).sum(0)
        if self.sums[depth] is None:
            self.sums[depth] = torch.zeros(self.rows[depth], pooled.shape[0], dtype=torch.float64,
                                           device=pooled.device)
        self.sums[depth][row] += pooled.double()

    def means(self) -> list[torch.Tensor]:
        if self.count == 0:
            raise ValueError("the probe set is empty: features need at least one probe image")
        return [s / self.count for s in self.sums]


def _walk_trie(supernet: Supernet, trie: PrefixTrie, state: Any, depth: int, lo: int, hi: int,
               sums: _NodeSums) -> None:
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


def _walk_naive(supernet: Supernet, rows: np.ndarray, begin: Any, sums: _NodeSums) -> None:
    """Every architecture from the ``path_begin`` state, no sharing."""
    depth = len(sums.rows)
    for index, row in enumerate(rows):
        state = begin
        for layer in range(depth):
            state, y = supernet.path_step(layer, state, row)
            sums.add(layer, index, y)


def epoch_layer_outputs(supernet: Supernet, probe: Iterable, rows: np.ndarray, device: torch.device,
                        trie: PrefixTrie | None = None) -> list[torch.Tensor]:
    """o^{l} for the current weights: per depth l a (nodes, C_l) float64
    tensor of GAP outputs averaged over the probe; nodes are trie nodes when
    ``trie`` is given, else the (checked) ``rows`` (naive path)."""
    depth = supernet.path_depth()
    sums = _NodeSums(trie.num_nodes if trie is not None else [rows.shape[0]] * depth)
    with torch.inference_mode():
        for batch in probe:
            x = _images(batch, device)
            begin = supernet.path_begin(x)
            if trie is not None:
                _walk_trie(supernet, trie, begin, 0, 0, trie.rows.shape[0], sums)
            else:
                _walk_naive(supernet, rows, begin, sums)
            sums.count += x.shape[0]
    return sums.means()


def extract_output_features(supernets: Iterable[Supernet], rows: np.ndarray, probe: Iterable,
                            device: torch.device, bn: Literal["running", "batch"] = "running",
                            method: Literal["trie", "naive"] = "trie",
                            progress: Progress | None = None, num_epochs: int | None = None) -> np.ndarray:
    """Eq. 7 features (u, L, η) float32 of the encoded ``rows`` (u, width).

    ``supernets`` yields the supernet with each chosen epoch's weights loaded
    (module docstring); each is moved to ``device`` in channels-last layout.
    ``probe`` is re-iterated once per epoch and yields image batches (or
    (x, y) pairs); a batch is one chunk of the depth-first walk."""
    if method not in ("trie", "naive"):
        raise ValueError(f"method = {method!r}: allowed 'trie' or 'naive'")
    if progress is not None:
        supernets = progress(supernets, desc=f"features ({method}, {len(rows)} archs)", total=num_epochs)
    checked: np.ndarray | None = None
    trie: PrefixTrie | None = None
    first: list[torch.Tensor] | None = None
    columns: list[list[torch.Tensor]] = []
    for supernet in supernets:
        if checked is None:
            checked = check_rows(supernet, rows)
            trie = build_trie(checked, path_prefixes(supernet)) if method == "trie" else None
        supernet.to(device, memory_format=torch.channels_last)
        set_bn_mode(supernet, bn)
        outputs = epoch_layer_outputs(supernet, probe, checked, device, trie)
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


# ---------------------------------------------------------------- Eq. 6

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
    return _cosine_from_sums(dot, na2.sqrt(), nb2.sqrt())


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


# ---------------------------------------------------------------- memory and threads

def _tensor_bytes(value: Any, seen: set[int]) -> int:
    """Bytes of the tensors in ``value`` (nested tuples/lists/dicts), each
    storage counted once."""
    if isinstance(value, torch.Tensor):
        ptr = value.untyped_storage().data_ptr()
        if ptr in seen:
            return 0
        seen.add(ptr)
        return value.numel() * value.element_size()
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return sum(_tensor_bytes(v, seen) for v in value)
    return 0


def layer_output_bytes(supernet: Supernet, rows: np.ndarray, input_shape: tuple[int, ...],
                       device: torch.device) -> list[int]:
    """Bytes per image of the ``path_begin`` state and of each layer's state
    and output, measured with one zero image along the first of ``rows``
    (in the spaces here a layer's output shape does not depend on the
    choice made)."""
    row = check_rows(supernet, rows)[0]
    supernet.to(device).eval()
    with torch.inference_mode():
        state = supernet.path_begin(torch.zeros((1, *input_shape), device=device))
        sizes = [_tensor_bytes(state, set())]
        for depth in range(supernet.path_depth()):
            state, y = supernet.path_step(depth, state, row)
            sizes.append(_tensor_bytes((state, y), set()))
    return sizes


def threads_for_chunk(supernet: Supernet, rows: np.ndarray, input_shape: tuple[int, ...], device: torch.device,
                      chunk: int, available: int, small_bytes: int = 4 * 2**20) -> int:
    """torch threads for feature extraction: 1 when the largest activation of
    a chunk is under ``small_bytes`` (tiny convolutions gain nothing from
    intra-op parallelism, and on a loaded CPU the OpenMP hand-off costs up to
    20x; measured on the digits preset), else ``available``."""
    if torch.device(device).type != "cpu":
        return available
    largest = max(layer_output_bytes(supernet, rows, input_shape, device)) * chunk
    return 1 if largest < small_bytes else available


def plan_chunk_size(supernet: Supernet, rows: np.ndarray, input_shape: tuple[int, ...], device: torch.device,
                    memory_mb: int, max_batch: int, internal_factor: int = 16) -> int:
    """Probe images per chunk so that one depth-first walk fits ``memory_mb``:
    the trie keeps the ``path_begin`` state and L layer states of a chunk
    alive, and a layer's internals (FBNet's expansion 6, a cell's nodes, a
    few temporaries) are bounded by ``internal_factor`` × the largest layer
    state. At least 1 image, at most ``max_batch``."""
    sizes = layer_output_bytes(supernet, rows, input_shape, device)
    per_image = sum(sizes) + internal_factor * max(sizes)
    return int(max(1, min(max_batch, (memory_mb * 2**20) // per_image)))
