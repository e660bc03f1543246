"""How large a probe chunk and how many threads a walk can afford."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from nas_core.dcnas.features.trie import check_rows
from nas_core.supernet.base import Supernet


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
