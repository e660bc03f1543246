"""Feature representation of sampled sub-networks (DC-NAS §3.2).

Eq. 7 (``method: output``, the default): for architecture i, layer l and
epoch e of the η chosen checkpoints,

    F_{l,e}(N_i) = <o_i^{l,1}, o_i^{l,e}> / (||o_i^{l,1}|| · ||o_i^{l,e}||),

where o_i^{l,e} is the output of layer l, global-average-pooled over space
(the paper applies GAP "before calculating F") and averaged over the probe
images, computed with the epoch-e supernet weights using only i's ops in
layers 1..l. "Epoch 1" is the first of the chosen checkpoints, so column 0 of
every feature row is 1.

Eq. 6 (``method: params``): the same cosine between the epoch-1 and epoch-e
parameters (``named_parameters``, flattened and concatenated; BatchNorm
running statistics are buffers and are left out) of the op that i uses at
layer l.

Cosine of zero vectors: F = 1 when both vectors are zero (a parameter-free op
such as ``skip`` in Eq. 6 "does not change", and a layer whose output is
identically zero has not moved) and F = 0 when only one of them is zero.

Prefix sharing: architectures that agree on layers 1..l have the same layer-l
output, so the unique architectures are arranged in a prefix trie (rows
sorted lexicographically; a node per distinct prefix) and each node is
computed once per probe chunk and epoch, depth first, so at most L
activations of one chunk are alive at any time. GAP outputs are accumulated
as sums per node over the probe chunks. Weights and probe images are kept
channels-last (about 3x faster for the depthwise blocks on a CPU; the model
is left in that layout). ``plan_chunk_size`` bounds the chunk
by a memory budget. The naive path (``extract_output_features(...,
method="naive")``) recomputes every architecture from the stem; it gives the
same numbers and exists for tests and the benchmark.

BatchNorm statistics (``bn``): ``running`` evaluates the supernet in eval
mode, so each op normalises with the running statistics it stored during
pre-training; ``batch`` puts only the BatchNorm layers in train mode, so each
op normalises with the statistics of the current probe chunk (the result then
depends on the chunk size; the stored running statistics are never read and
are reloaded from the checkpoint for every epoch).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal, Mapping

import numpy as np
import torch
from torch import nn

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
    dot = (a * b).sum(-1)
    na, nb = a.norm(dim=-1), b.norm(dim=-1)
    both_zero = (na == 0) & (nb == 0)
    denom = torch.where(both_zero | (na * nb == 0), torch.ones_like(dot), na * nb)
    out = torch.where(both_zero, torch.ones_like(dot), dot / denom)
    return out.clamp(-1.0, 1.0)


@dataclass(frozen=True)
class PrefixTrie:
    """Unique architectures sorted lexicographically (``archs`` (u, L)),
    ``order[j]`` = row of the caller's array stored at sorted position j,
    and ``node_ids[j, l]`` = id (within depth l) of the prefix archs[j, :l+1]."""

    archs: np.ndarray
    order: np.ndarray
    node_ids: np.ndarray
    num_nodes: tuple[int, ...]

    @property
    def total_nodes(self) -> int:
        return int(sum(self.num_nodes))


def build_trie(archs: np.ndarray) -> PrefixTrie:
    """Prefix trie of the rows of ``archs`` (u, L), in O(u·L)."""
    archs = np.asarray(archs)
    if archs.ndim != 2 or archs.shape[0] < 1 or archs.shape[1] < 1:
        raise ValueError(f"architectures must be a non-empty (count, layers) array, got shape {archs.shape}")
    order = np.lexsort(archs.T[::-1])
    rows = archs[order]
    new_prefix = np.zeros(rows.shape[0], dtype=bool)
    new_prefix[0] = True
    node_ids = np.empty(rows.shape, dtype=np.int64)
    for layer in range(rows.shape[1]):
        new_prefix[1:] |= rows[1:, layer] != rows[:-1, layer]
        node_ids[:, layer] = np.cumsum(new_prefix) - 1
    num_nodes = tuple(int(n) for n in node_ids[-1] + 1)
    return PrefixTrie(archs=rows, order=order, node_ids=node_ids, num_nodes=num_nodes)


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


def _walk_trie(model: nn.Module, trie: PrefixTrie, x: torch.Tensor, depth: int, lo: int, hi: int,
               sums: _NodeSums) -> None:
    """Depth-first over the children of the prefix shared by rows [lo, hi)."""
    ids = trie.node_ids[lo:hi, depth]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) + lo
    ends = np.r_[starts[1:], hi]
    for start, end in zip(starts.tolist(), ends.tolist()):
        y = model.layers[depth].ops[int(trie.archs[start, depth])](x)
        sums.add(depth, int(trie.node_ids[start, depth]), y)
        if depth + 1 < trie.archs.shape[1]:
            _walk_trie(model, trie, y, depth + 1, start, end, sums)


def _walk_naive(model: nn.Module, archs: np.ndarray, x: torch.Tensor, sums: _NodeSums) -> None:
    """Every architecture from the stem output, no sharing."""
    for row, arch in enumerate(archs.tolist()):
        y = x
        for depth, op in enumerate(arch):
            y = model.layers[depth].ops[op](y)
            sums.add(depth, row, y)


def epoch_layer_outputs(model: nn.Module, probe: Iterable, archs: np.ndarray, device: torch.device,
                        trie: PrefixTrie | None = None) -> list[torch.Tensor]:
    """o^{l} for the current weights: per depth l a (rows, C_l) float64
    tensor of GAP outputs averaged over the probe; rows are trie nodes when
    ``trie`` is given, else the rows of ``archs`` (naive path)."""
    sums = _NodeSums(trie.num_nodes if trie is not None else [archs.shape[0]] * archs.shape[1])
    with torch.inference_mode():
        for batch in probe:
            x = model.stem(_images(batch, device))
            if trie is not None:
                _walk_trie(model, trie, x, 0, 0, trie.archs.shape[0], sums)
            else:
                _walk_naive(model, archs, x, sums)
            sums.count += x.shape[0]
    return sums.means()


def _check_archs(model: nn.Module, archs: np.ndarray) -> np.ndarray:
    archs = np.asarray(archs)
    if archs.ndim != 2 or archs.shape[0] < 1:
        raise ValueError(f"architectures must be a non-empty (count, layers) array, got shape {archs.shape}")
    if archs.shape[1] != len(model.layers):
        raise ValueError(f"architectures have {archs.shape[1]} layers but the supernet has {len(model.layers)}")
    for depth, layer in enumerate(model.layers):
        top = int(archs[:, depth].max())
        if archs[:, depth].min() < 0 or top >= len(layer.ops):
            raise ValueError(f"layer {depth}: op index {top} out of range 0..{len(layer.ops) - 1}")
    return archs.astype(np.int64, copy=False)


def extract_output_features(model: nn.Module, states: Iterable[Mapping[str, torch.Tensor]], archs: np.ndarray,
                            probe: Iterable, device: torch.device, bn: Literal["running", "batch"] = "running",
                            method: Literal["trie", "naive"] = "trie",
                            progress: Progress | None = None, num_epochs: int | None = None) -> np.ndarray:
    """Eq. 7 features (u, L, η) float32 of the rows of ``archs`` (u, L).

    ``states`` yields the supernet state_dict of each chosen epoch in order
    (a generator keeps one checkpoint in memory at a time); ``probe`` is
    re-iterated once per epoch and yields image batches (or (x, y) pairs)."""
    if method not in ("trie", "naive"):
        raise ValueError(f"method = {method!r}: allowed 'trie' or 'naive'")
    archs = _check_archs(model, archs)
    trie = build_trie(archs) if method == "trie" else None
    model.to(device, memory_format=torch.channels_last)
    first: list[torch.Tensor] | None = None
    columns: list[list[torch.Tensor]] = []
    if progress is not None:
        states = progress(states, desc=f"features ({method}, {archs.shape[0]} archs)", total=num_epochs)
    for state in states:
        model.load_state_dict(state)
        set_bn_mode(model, bn)
        outputs = epoch_layer_outputs(model, probe, archs, device, trie)
        first = outputs if first is None else first
        columns.append([cosine(f, o).cpu() for f, o in zip(first, outputs)])
    if not columns:
        raise ValueError("no checkpoints given: Eq. 7 needs at least one epoch")
    return _assemble(columns, trie, archs.shape)


def _assemble(columns: list[list[torch.Tensor]], trie: PrefixTrie | None, shape: tuple[int, int]) -> np.ndarray:
    """Gather per-row features (u, L, η) from per-node (or per-row) columns."""
    u, num_layers = shape
    out = np.empty((u, num_layers, len(columns)), dtype=np.float32)
    for depth in range(num_layers):
        per_node = torch.stack([col[depth] for col in columns], dim=1).numpy()
        if trie is None:
            out[:, depth, :] = per_node
        else:
            out[trie.order, depth, :] = per_node[trie.node_ids[:, depth]]
    if not np.isfinite(out).all():
        raise FloatingPointError("feature extraction produced NaN/inf")
    return out


def op_parameter_names(model: nn.Module) -> list[list[list[str]]]:
    """names[l][i] = state_dict keys of the trainable parameters of op i of
    layer l (empty for parameter-free ops)."""
    names: list[list[list[str]]] = []
    for depth, layer in enumerate(model.layers):
        names.append([[f"layers.{depth}.ops.{i}.{n}" for n, _ in op.named_parameters()]
                      for i, op in enumerate(layer.ops)])
    return names


def _flat(state: Mapping[str, torch.Tensor], keys: list[str]) -> torch.Tensor:
    if not keys:
        return torch.zeros(0, dtype=torch.float64)
    return torch.cat([state[k].detach().reshape(-1).double().cpu() for k in keys])


def param_feature_table(model: nn.Module, states: Iterable[Mapping[str, torch.Tensor]],
                        progress: Progress | None = None, num_epochs: int | None = None) -> np.ndarray:
    """Eq. 6 per op: table (L, n_ops_max, η) with F_{l,i,e} = cos(θ^{l,i,1},
    θ^{l,i,e}); parameter-free ops get 1 (both vectors empty)."""
    names = op_parameter_names(model)
    width = max(len(layer) for layer in names)
    first: list[list[torch.Tensor]] | None = None
    columns: list[np.ndarray] = []
    states = progress(states, desc="features (params)", total=num_epochs) if progress is not None else states
    for state in states:
        current = [[_flat(state, keys) for keys in layer] for layer in names]
        first = current if first is None else first
        col = np.ones((len(names), width), dtype=np.float64)
        for depth, layer in enumerate(current):
            for i, vec in enumerate(layer):
                col[depth, i] = float(cosine(first[depth][i], vec))
        columns.append(col)
    if not columns:
        raise ValueError("no checkpoints given: Eq. 6 needs at least one epoch")
    return np.stack(columns, axis=-1)


def extract_param_features(model: nn.Module, states: Iterable[Mapping[str, torch.Tensor]], archs: np.ndarray,
                           progress: Progress | None = None, num_epochs: int | None = None) -> np.ndarray:
    """Eq. 6 features (u, L, η) float32 of the rows of ``archs``."""
    archs = _check_archs(model, archs)
    table = param_feature_table(model, states, progress, num_epochs)
    layers = np.arange(archs.shape[1])[None, :]
    out = table[layers, archs].astype(np.float32)
    if not np.isfinite(out).all():
        raise FloatingPointError("feature extraction produced NaN/inf")
    return out


def layer_output_bytes(model: nn.Module, input_shape: tuple[int, ...], device: torch.device) -> list[int]:
    """Bytes per image of the stem output and of each layer's output (all ops
    of a layer share the output shape), measured with one zero image through
    op 0 of every layer."""
    model.to(device).eval()
    sizes = []
    with torch.no_grad():
        y = model.stem(torch.zeros((1, *input_shape), device=device))
        sizes.append(y.numel() * y.element_size())
        for layer in model.layers:
            y = layer.ops[0](y)
            sizes.append(y.numel() * y.element_size())
    return sizes


def threads_for_chunk(model: nn.Module, input_shape: tuple[int, ...], device: torch.device, chunk: int,
                      available: int, small_bytes: int = 4 * 2**20) -> int:
    """torch threads for feature extraction: 1 when the largest activation of
    a chunk is under ``small_bytes`` (tiny convolutions gain nothing from
    intra-op parallelism, and on a loaded CPU the OpenMP hand-off costs up to
    20x; measured on the digits preset), else ``available``."""
    if device.type != "cpu":
        return available
    largest = max(layer_output_bytes(model, input_shape, device)) * chunk
    return 1 if largest < small_bytes else available


def plan_chunk_size(model: nn.Module, input_shape: tuple[int, ...], device: torch.device, memory_mb: int,
                    max_batch: int, internal_factor: int = 16) -> int:
    """Probe images per chunk so that one depth-first walk fits ``memory_mb``:
    the trie keeps the stem and L layer outputs of a chunk alive, and an op's
    internals (expansion 6, a few temporaries) are bounded by
    ``internal_factor`` × the largest layer output. At least 1 image."""
    sizes = layer_output_bytes(model, input_shape, device)
    per_image = sum(sizes) + internal_factor * max(sizes)
    return int(max(1, min(max_batch, (memory_mb * 2**20) // per_image)))
