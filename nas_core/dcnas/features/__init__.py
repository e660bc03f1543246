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

The modules: common.py (cosine, thresholds, per-node sums), trie.py (the prefix trie),
output.py (Eq. 7), batched.py (the batched walk), partitions.py (fan-out ranges),
parameters.py (Eq. 6), memory.py (chunk size and threads).
"""
from nas_core.dcnas.features.batched import (
    BatchedPlan,
    BatchLimits,
    node_starts,
    plan_batch_limits,
    plan_batched_walk,
    split_state,
    stack_states,
    step_key,
    walk_batched,
)
from nas_core.dcnas.features.common import (
    CPU_CALL_IMAGES,
    METHODS,
    MIN_BATCHED_CHUNK,
    Method,
    NodeSums,
    Progress,
    cosine,
    cosine_from_sums,
    cosine_to_first,
    gap,
)
from nas_core.dcnas.features.memory import layer_output_bytes, plan_chunk_size, threads_for_chunk
from nas_core.dcnas.features.output import (
    check_method,
    epoch_layer_outputs,
    extract_output_features,
    loaded_epochs,
    set_bn_mode,
)
from nas_core.dcnas.features.parameters import extract_param_features
from nas_core.dcnas.features.partitions import assemble_partitions, partition_rows
from nas_core.dcnas.features.trie import PrefixTrie, build_trie, check_rows, path_prefixes, supernet_trie

__all__ = ["BatchLimits", "BatchedPlan", "CPU_CALL_IMAGES", "METHODS", "MIN_BATCHED_CHUNK", "Method", "NodeSums",
           "PrefixTrie", "Progress", "assemble_partitions", "build_trie", "check_method", "check_rows",
           "cosine", "cosine_from_sums", "cosine_to_first", "epoch_layer_outputs", "extract_output_features",
           "extract_param_features", "gap", "layer_output_bytes", "loaded_epochs", "node_starts",
           "partition_rows", "path_prefixes", "plan_batch_limits", "plan_batched_walk", "plan_chunk_size",
           "set_bn_mode", "split_state", "stack_states", "step_key", "supernet_trie", "threads_for_chunk",
           "walk_batched"]
