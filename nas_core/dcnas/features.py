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
Batched walk (``method="batched"``, :func:`plan_batched_walk`): the nodes
of one depth whose rows apply the same function there are evaluated in one
``path_step`` call on their parents' states stacked along the batch axis,
and the output is split back per node. Which rows apply the same function
is the supernet's optional ``path_step_key(depth, row)`` (equal keys: the
same op with the same weights; the layer-wise supernet keys by the op index,
the cell supernets by the genotype of the cell's kind, the DSO supernet by
the block's used connections, one key for a reduction block); a supernet without
it keys each node by its own prefix, so every call holds one node. The
stacked call does per image exactly the arithmetic of the per-node call
(BatchNorm in eval mode, convolutions and pooling per image), so the
features equal the per-node trie's bit for bit (checked with ``np.array_equal``
in tests/dcnas/test_features_partition.py on the layer-wise and cell
supernets on the CPU). With ``bn="batch"`` the stacked call would take
BatchNorm statistics over several nodes, so the batched walk refuses it.
PyTorch's CPU convolution chooses its backend by batch size (a
single-threaded 1x1 convolution runs natively below 16 images and in oneDNN
from 16 on; the two round differently), so a probe chunk of fewer than
``MIN_BATCHED_CHUNK`` = 16 images is walked per node; from 16 on the stacked
calls stay in the same backend as the per-node ones. On a GPU, cuDNN may
pick another algorithm for a larger batch: expect agreement to float32
rounding there, not bit equality (not measured: no GPU here).
Memory (:class:`BatchLimits`): the sorted rows are walked in blocks of at
most ``block_leaves`` distinct rows, breadth-first inside a block (the
states of two depths of a block are alive), at most ``call_nodes`` nodes per
call (:func:`plan_batch_limits` sizes both from ``memory_mb`` and, on a
CPU, keeps a call under ``CPU_CALL_IMAGES`` images); a node whose subtree
crosses a block boundary is recomputed by the next block, which does not
add it to the sums again.

Partitions (:func:`partition_rows`): contiguous ranges of the sorted rows,
balanced by trie nodes, cut at the start of a node as shallow as the balance
allows. A node's output depends only on its prefix, so extracting a range on
its own gives its rows exactly the features of one extraction over all rows
(a node shared by two ranges is computed by both, identically);
:func:`assemble_partitions` puts the ranges back in the caller's row order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable, Iterator, Literal, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from nas_core.supernet.base import Supernet

Progress = Callable[..., Iterable]
Method = Literal["trie", "batched", "naive"]
# PyTorch's CPU convolution picks its backend by batch size (single-threaded 1x1 convolutions use oneDNN only
# from 16 images on), and two backends round differently: smaller chunks are walked per node.
MIN_BATCHED_CHUNK = 16
# Images per batched call on a CPU: measured on the digits preset (2 cores, one thread), calls of 1-2k images
# ran fastest; 16k-image calls were slower than one call per node (their tensors leave the caches).
CPU_CALL_IMAGES = 2048
METHODS = ("trie", "batched", "naive")


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

    def add_nodes(self, depth: int, nodes: torch.Tensor, keep: torch.Tensor | None, y: torch.Tensor,
                  count: int) -> None:
        """:meth:`add` for the ``count`` nodes stacked in ``y`` (equal
        slices along the batch axis): rows ``nodes`` get the sums of the
        slices ``keep`` (None: all of them)."""
        pooled = gap(y)
        pooled = pooled.reshape(count, -1, pooled.shape[-1]).sum(1)
        if keep is not None:
            pooled = pooled[keep.to(pooled.device)]
        if self.sums[depth] is None:
            self.sums[depth] = torch.zeros(self.rows[depth], pooled.shape[1], dtype=torch.float64,
                                           device=pooled.device)
        self.sums[depth][nodes.to(pooled.device)] += pooled.double()

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
                        trie: PrefixTrie | None = None, plan: BatchedPlan | None = None) -> list[torch.Tensor]:
    """o^{l} for the current weights: per depth l a (nodes, C_l) float64
    tensor of GAP outputs averaged over the probe; nodes are trie nodes when
    ``trie`` is given (walked per node, or batched by ``plan``), else the
    (checked) ``rows`` (naive path)."""
    depth = supernet.path_depth()
    sums = _NodeSums(trie.num_nodes if trie is not None else [rows.shape[0]] * depth)
    with torch.inference_mode():
        for batch in probe:
            x = _images(batch, device)
            begin = supernet.path_begin(x)
            if plan is not None and x.shape[0] >= MIN_BATCHED_CHUNK:
                _walk_batched(supernet, trie, plan, begin, sums)
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


# ---------------------------------------------------------------- batched walk

def step_key(supernet: Supernet, depth: int, row: np.ndarray) -> Hashable:
    """The supernet's ``path_step_key(depth, row)`` (rows with equal keys
    apply the same function at ``depth``), or the row's prefix at ``depth``
    (the node itself) when the supernet has none."""
    key = getattr(supernet, "path_step_key", None)
    if key is None:
        return ("prefix", row[:supernet.path_prefix(depth)].tobytes())
    return key(depth, row)


@dataclass(frozen=True)
class BatchLimits:
    """Memory bounds of the batched walk: ``block_leaves`` distinct rows per
    block (the states of two depths of a block are alive at once) and
    ``call_nodes`` nodes stacked in one ``path_step`` call."""

    block_leaves: int = 1024
    call_nodes: int = 64

    def __post_init__(self) -> None:
        if self.block_leaves < 1 or self.call_nodes < 1:
            raise ValueError(f"BatchLimits: block_leaves and call_nodes must be >= 1, got {self}")


def plan_batch_limits(supernet: Supernet, rows: np.ndarray, input_shape: tuple[int, ...], device: torch.device,
                      memory_mb: int, chunk: int, internal_factor: int = 16) -> BatchLimits:
    """Limits that keep a batched walk over probe chunks of ``chunk`` images
    within ``memory_mb``: half for a block's states (parents and children:
    2 x the largest layer state per node), half for one call (its stacked
    input and internals: 1 + ``internal_factor`` x the largest layer state
    per node, as in :func:`plan_chunk_size`). On a CPU a call also stays
    under ``CPU_CALL_IMAGES`` images (larger calls leave the caches)."""
    per_node = chunk * max(layer_output_bytes(supernet, rows, input_shape, device))
    half = memory_mb * 2**20 // 2
    call_nodes = max(1, half // ((1 + internal_factor) * per_node))
    if torch.device(device).type == "cpu":
        call_nodes = min(call_nodes, max(1, CPU_CALL_IMAGES // chunk))
    return BatchLimits(block_leaves=max(1, half // (2 * per_node)), call_nodes=call_nodes)


@dataclass(frozen=True)
class _Call:
    """One ``path_step`` call of a block at ``depth`` with the row ``row``:
    inputs are the block's states ``parents`` of the previous depth (depth 0:
    the chunk's ``path_begin`` state), outputs go to the block's slots
    ``slots``; trie nodes ``nodes`` get the sums of the call's positions
    ``keep`` (None: all; a node already summed by an earlier block is left
    out)."""

    row: int
    parents: tuple[int, ...]
    slots: tuple[int, ...]
    nodes: torch.Tensor
    keep: torch.Tensor | None


@dataclass(frozen=True)
class BatchedPlan:
    """Per block of sorted rows, per depth: the block's node count and its
    calls."""

    widths: list[list[int]]
    blocks: list[list[list[_Call]]]

    @property
    def calls(self) -> int:
        """``path_step`` calls per probe chunk and epoch."""
        return sum(len(calls) for block in self.blocks for calls in block)


def node_starts(trie: PrefixTrie) -> np.ndarray:
    """(u, L) bool: sorted row j is the first row of its node at depth l."""
    starts = np.ones(trie.node_ids.shape, dtype=bool)
    starts[1:] = trie.node_ids[1:] != trie.node_ids[:-1]
    return starts


def plan_batched_walk(supernet: Supernet, trie: PrefixTrie, limits: BatchLimits | None = None) -> BatchedPlan:
    """The calls of the batched walk (module docstring): blocks of at most
    ``limits.block_leaves`` distinct rows; in a block, per depth, the nodes
    grouped by :func:`step_key` in order of first appearance, at most
    ``limits.call_nodes`` per call."""
    limits = limits or BatchLimits()
    starts = node_starts(trie)
    cuts = np.flatnonzero(starts[:, -1])[::limits.block_leaves].tolist() + [trie.rows.shape[0]]
    widths, blocks = [], []
    for lo, hi in zip(cuts, cuts[1:]):
        block = [_plan_depth(supernet, trie, starts, lo, hi, depth, limits.call_nodes) for depth in range(trie.depth)]
        widths.append([width for width, _ in block])
        blocks.append([calls for _, calls in block])
    return BatchedPlan(widths, blocks)


def _plan_depth(supernet: Supernet, trie: PrefixTrie, starts: np.ndarray, lo: int, hi: int, depth: int,
                call_nodes: int) -> tuple[int, list[_Call]]:
    """The node count and calls of sorted rows [lo, hi) at ``depth``."""
    ids = trie.node_ids[lo:hi, depth]
    first = lo + np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    nodes = trie.node_ids[first, depth]
    parents = (np.zeros(len(first), dtype=np.int64) if depth == 0
               else trie.node_ids[first, depth - 1] - trie.node_ids[lo, depth - 1])
    owned = starts[first, depth]
    groups: dict[Hashable, list[int]] = {}
    for slot, row in enumerate(first.tolist()):
        groups.setdefault(step_key(supernet, depth, trie.rows[row]), []).append(slot)
    calls = []
    for members in groups.values():
        for start in range(0, len(members), call_nodes):
            slots = np.array(members[start:start + call_nodes])
            keep = np.flatnonzero(owned[slots])
            calls.append(_Call(int(first[slots[0]]), tuple(parents[slots].tolist()), tuple(slots.tolist()),
                               torch.from_numpy(nodes[slots[keep]]),
                               None if len(keep) == len(slots) else torch.from_numpy(keep)))
    return len(first), calls


def stack_states(states: Sequence[Any]) -> Any:
    """States (tensors, or tuples/lists/dicts of them) concatenated along
    the batch axis; other values must be equal and are kept once."""
    head = states[0]
    if len(states) == 1:
        return head
    if isinstance(head, torch.Tensor):
        return torch.cat(list(states))
    if isinstance(head, (tuple, list)):
        return type(head)(stack_states(parts) for parts in zip(*states))
    if isinstance(head, Mapping):
        return {k: stack_states([s[k] for s in states]) for k in head}
    return head


def split_state(state: Any, count: int) -> list[Any]:
    """The inverse of :func:`stack_states`: ``count`` equal batch slices."""
    if count == 1:
        return [state]
    if isinstance(state, torch.Tensor):
        if state.shape[0] % count:
            raise ValueError(f"cannot split a batch of {state.shape[0]} into {count} equal node slices")
        return list(state.split(state.shape[0] // count))
    if isinstance(state, (tuple, list)):
        return [type(state)(parts) for parts in zip(*(split_state(v, count) for v in state))]
    if isinstance(state, Mapping):
        split = {k: split_state(v, count) for k, v in state.items()}
        return [{k: v[i] for k, v in split.items()} for i in range(count)]
    return [state] * count


def _walk_batched(supernet: Supernet, trie: PrefixTrie, plan: BatchedPlan, begin: Any, sums: _NodeSums) -> None:
    """Each block breadth-first, one ``path_step`` per planned call."""
    for widths, block in zip(plan.widths, plan.blocks):
        previous: list[Any] = [begin]
        for depth, calls in enumerate(block):
            last = depth + 1 == trie.depth
            current: list[Any] = [] if last else [None] * widths[depth]
            for call in calls:
                count = len(call.parents)
                state, y = supernet.path_step(depth, stack_states([previous[p] for p in call.parents]),
                                              trie.rows[call.row])
                if len(call.nodes):
                    sums.add_nodes(depth, call.nodes, call.keep, y, count)
                if not last:
                    for slot, part in zip(call.slots, split_state(state, count)):
                        current[slot] = part
            previous = current


# ---------------------------------------------------------------- partitions

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
