"""The DSO-NAS supernet over a :class:`~nas_core.spaces.dso.DSOSpace`: the
completely connected block network (dso-nas.md §3.2, Eq. 8) with a scaling
factor λ on every connection.

* ``lam`` (structures, E): one λ per connection of each block structure
  (``scope: share``: one row shared by every normal block; ``full``: a row
  per normal block), initialised to 1 (Algorithm 1, line 2). The forward
  uses ``lam`` as stored: under APG-NAG this is the look-ahead point λ' of
  Eq. 13/16 where the next gradient is taken.
* ``alive`` (structures, E) bool buffer: connections not yet pruned. A
  pruned connection, and any node it isolates, is skipped in the forward
  (nas_core.spaces.dso.graph), exactly as in the pruned network.
* BatchNorm scales are fixed to 1 and not trained ("the scaling parameters
  in batch normalization layers are fixed to one to prevent affecting the
  learning of λ", §4.1); BN shifts train.

Module names match the stand-alone network (``stem``, ``cells.<i>``,
``head``), so :func:`export_network` copies weights into a genotype's
network and folds the kept λ into its ``edge_scales``.

Supernet protocol (nas_core.supernet.base), for DC-NAS: a row is an encoded
genotype (one bit per (structure, connection), structure-major, as
``DSOSpace.encode``); layer d is ``cells[d]`` (every normal and reduction
block). Sub-network ``row`` keeps the connections that the row keeps *and*
the supernet has not pruned, each scaled by its trained λ (Eq. 8 on the
network restricted to that connection set: Eq. 7 of DC-NAS), and runs only
the live nodes. Block d's output depends on the rows of the structures of
normal blocks 0..d (share: the whole row from the first block on). Its
parameters (Eq. 6) are those of its live ops and of R.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from nas_core.spaces.dso import DSOBlock, DSOGenotype, DSONetwork, DSOSpace, ReductionBlock, make_head, make_stem
from nas_core.spaces.dso.network import final_channels

_CACHE = 256


def fix_bn_scales(module: nn.Module) -> None:
    """Every BatchNorm scale set to 1 and frozen."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d) and m.affine:
            with torch.no_grad():
                m.weight.fill_(1.0)
            m.weight.requires_grad_(False)


class DSOSupernet(nn.Module):
    """Stem -> every block of the space (all nodes, all connections) -> head,
    with ``lam`` and ``alive`` (module docstring)."""

    def __init__(self, space: DSOSpace) -> None:
        super().__init__()
        self.space, self.graph = space, space.graph
        layers = space.layers()
        self.kinds = tuple(spec.kind for spec in layers)
        self.block_index = tuple(spec.index for spec in layers)
        self.stem = make_stem(space.input_shape[0], layers[0].channels)
        self.cells = nn.ModuleList(ReductionBlock(s.channels) if s.kind == "reduction"
                                   else DSOBlock(self.graph, s.channels) for s in layers)
        self.head = make_head(final_channels(layers), space.num_classes)
        shape = (space.num_structures, self.graph.num_edges)
        self.lam = nn.Parameter(torch.ones(shape))
        self.register_buffer("alive", torch.ones(shape, dtype=torch.bool))
        fix_bn_scales(self)
        self._used: dict[bytes, np.ndarray] = {}

    def weight_parameters(self) -> list[nn.Parameter]:
        """The trainable weights W (everything but λ and the fixed BN scales)."""
        return [p for name, p in self.named_parameters() if name != "lam" and p.requires_grad]

    def kept(self) -> np.ndarray:
        """(structures, E) bool: connections not pruned."""
        return self.alive.detach().cpu().numpy().copy()

    def used_masks(self, kept: np.ndarray) -> np.ndarray:
        """(blocks, E) used connections per normal block (cached per mask)."""
        kept = np.asarray(kept, dtype=bool)
        key = kept.tobytes()
        if key not in self._used:
            if len(self._used) >= _CACHE:
                self._used.clear()
            self._used[key] = self.space.block_masks(kept)
        return self._used[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_kept(x, self.kept())

    def forward_kept(self, x: torch.Tensor, kept: np.ndarray) -> torch.Tensor:
        """Logits with only the ``kept`` (structures, E) connections."""
        used = self.used_masks(kept)
        h = self.stem(x)
        for depth in range(len(self.cells)):
            h = self._run(depth, h, used)
        return self.head(h)

    def _run(self, depth: int, h: torch.Tensor, used: np.ndarray) -> torch.Tensor:
        cell = self.cells[depth]
        if self.kinds[depth] == "reduction":
            return cell(h)
        block = self.block_index[depth]
        lam = self.lam if torch.is_grad_enabled() else self.lam.detach()  # no-grad views of a parameter trip
        return cell(h, lam[self.space.structure_of(block)], used[block])  # torch's module tracker (FLOP counts)

    # ------------------------------------------------------------ Supernet protocol
    def path_depth(self) -> int:
        return len(self.cells)

    def path_prefix(self, depth: int) -> int:
        if self.space.scope == "share":
            return self.graph.num_edges
        blocks = sum(1 for kind in self.kinds[:depth + 1] if kind == "block")
        return blocks * self.graph.num_edges

    def check_rows(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows)
        width = self.space.encoding_length
        if rows.ndim != 2 or rows.shape[0] < 1 or rows.shape[1] != width:
            raise ValueError(f"dso architectures must be a non-empty (count, {width}) array, got shape {rows.shape}")
        if not np.issubdtype(rows.dtype, np.integer) or rows.min() < 0 or rows.max() > 1:
            raise ValueError(f"dso architecture rows hold one bit per connection: values must be 0 or 1, got "
                             f"{rows.min()}..{rows.max()}")
        return rows.astype(np.int64, copy=False)

    def row_kept(self, row: np.ndarray) -> np.ndarray:
        """The connections sub-network ``row`` runs: kept by the row and not pruned."""
        return np.asarray(row, dtype=bool).reshape(self.alive.shape) & self.kept()

    def path_begin(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x)

    def path_step(self, depth: int, state: torch.Tensor, row: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        y = self._run(depth, state, self.used_masks(self.row_kept(row)))
        return y, y

    def path_step_key(self, depth: int, row: np.ndarray) -> bytes:
        """Rows that run the same connections of block ``depth`` (after
        pruning, counting only connections that reach the output) apply the
        same function there; every row runs the same reduction block (the
        batched walk of nas_core.dcnas.features)."""
        if self.kinds[depth] == "reduction":
            return b"reduction"
        return self.used_masks(self.row_kept(row))[self.block_index[depth]].tobytes()

    def path_parameter_names(self, depth: int, row: np.ndarray) -> tuple[str, ...]:
        cell, prefix = self.cells[depth], f"cells.{depth}."
        if self.kinds[depth] == "reduction":
            return tuple(prefix + n for n, p in cell.named_parameters() if p.requires_grad)
        used = self.used_masks(self.row_kept(row))[self.block_index[depth]]
        plan = cell.plan(used)
        names = [f"{prefix}ops.{node}.{n}" for node, _ in plan.nodes
                 for n, p in cell.ops[str(node)].named_parameters() if p.requires_grad]
        if plan.out_edges:
            names += [prefix + n for n, p in cell.named_parameters() if n.startswith("reduce") and p.requires_grad]
        return tuple(names)


def export_network(supernet: DSOSupernet, genotype: DSOGenotype,
                   lam: Optional[torch.Tensor] = None) -> DSONetwork:
    """``genotype``'s network at the search width with the supernet's
    weights and the kept λ (``lam``, default the supernet's) folded into its
    ``edge_scales``: it computes what the supernet computes with every
    connection outside ``genotype`` at λ = 0."""
    space = supernet.space
    net = space.build_network(genotype, width_multiplier=1.0)
    source = supernet.state_dict()
    lam = (supernet.lam if lam is None else lam).detach()
    state: dict[str, Any] = {}
    for name, value in net.state_dict().items():
        if name == "edge_scales":
            structures = [space.structure_of(b) for b in range(space.num_blocks)]
            state[name] = lam[structures].to(value.dtype).clone()
        elif name.endswith(".reduce.weight"):
            depth = int(name.split(".")[1])
            state[name] = _reduce_columns(supernet.cells[depth], net.cells[depth], source[name])
        else:
            state[name] = source[name].clone()
    net.load_state_dict(state)
    return net


def _reduce_columns(full: DSOBlock, pruned: DSOBlock, weight: torch.Tensor) -> torch.Tensor:
    """R's weight columns of the nodes ``pruned`` reads, in its order."""
    c = full.channels
    cols = [full.out_sources.index(n) * c + i for n in pruned.out_sources for i in range(c)]
    return weight[:, cols].clone()
