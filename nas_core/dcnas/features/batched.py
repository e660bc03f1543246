"""The batched walk: the nodes of one depth that apply the same function run in one call
(package docstring, "Batched walk" and "Memory")."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch

from nas_core.dcnas.features.common import CPU_CALL_IMAGES, NodeSums
from nas_core.dcnas.features.memory import layer_output_bytes
from nas_core.dcnas.features.trie import PrefixTrie
from nas_core.supernet.base import Supernet


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


def walk_batched(supernet: Supernet, trie: PrefixTrie, plan: BatchedPlan, begin: Any, sums: NodeSums) -> None:
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
