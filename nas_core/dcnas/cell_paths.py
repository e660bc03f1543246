"""DC-NAS on the DARTS cell space: sampling cell genotypes from a cell
search's probability tables, and Eq. 7 features per cell output.

Encoding: a sampled architecture is one integer row of
:data:`ROW_WIDTH` = 32 entries: for the normal then the reduction cell, for
nodes 2..5, ``(input_a, op_a, input_b, op_b)`` with input_a < input_b and op
indices into the op set. Identical genotypes give identical rows, so
:func:`nas_core.dcnas.sample.unique_rows` dedups them as in the layer-wise
space, and the layer-wise clustering/selection code applies unchanged.

Sampling (the cell analogue of "normalise the probabilities of the
operations in the same layer and draw"; the paper has no cell space, so
these are our choices):
- per node, its two inputs are drawn without replacement with probability
  proportional to the edge's mass of non-zero ops,
  q_e = edge_weight_e * (1 - p_e[none]) (edge_weight: PC-DARTS's softmax
  beta, 1 for the others), via the Gumbel-top-2 trick;
- on each drawn edge the op is drawn from p_e restricted to the non-zero ops
  and renormalised. ``none`` is never drawn (DARTS's derivation rule).

Features (Eq. 7 per cell): for architecture i, cell l, checkpoint e,
o_i^{l,e} = output of cell l of the search supernet (epoch-e weights) using
only i's edges and ops, global-average-pooled and averaged over the probe
images; F_{l,e} = cos(o^{l,1}, o^{l,e}). A sub-network forward evaluates
one op per edge: the drawn op with weight 1 on the 8 kept edges, the
``none`` op with weight 0 on the other 6; PC-DARTS's edge weights are not
applied (the sub-network is the genotype itself). Every cell depends on the
whole genotype, so there is no prefix sharing here.
"""
from __future__ import annotations

from typing import Iterable, Literal, Mapping, Optional, Sequence

import numpy as np
import torch

from nas_core.dcnas.features import Progress, cosine, gap, set_bn_mode
from nas_core.dcnas.sample import SampleResult, index_dtype, unique_rows
from nas_core.spaces.cell import EDGES, NUM_INPUTS, NUM_NODES, ZERO, CellGenotype, edge_index, node_edges
from nas_core.supernet.cell import MixWeights, SearchNetwork

KINDS = ("normal", "reduce")
PICKS = 2
ROW_WIDTH = len(KINDS) * NUM_NODES * PICKS * 2


def _tables(probabilities: np.ndarray, op_names: Sequence[str], edge_weights: Optional[np.ndarray]):
    """(edge mass (14,), op CDF over non-zero ops (14, n_nonzero), their op indices)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.shape != (len(EDGES), len(op_names)) or not np.isfinite(p).all() or (p < 0).any():
        raise ValueError(f"cell probabilities: need a finite non-negative ({len(EDGES)}, {len(op_names)}) "
                         f"table, got shape {p.shape}")
    nonzero = [j for j, name in enumerate(op_names) if name != ZERO]
    mass = p[:, nonzero].sum(axis=1) * (np.ones(len(EDGES)) if edge_weights is None else np.asarray(edge_weights))
    ops = p[:, nonzero]
    sums = ops.sum(axis=1, keepdims=True)
    empty = [EDGES[e] for e in np.flatnonzero(sums[:, 0] <= 0)]
    if empty:
        raise ValueError(f"cell probabilities: edges (node, input) {empty} give no weight to a non-zero op")
    return mass, np.cumsum(ops / sums, axis=1), np.array(nonzero)


def _draw_kind(rng: np.random.Generator, mass: np.ndarray, cdf: np.ndarray, nonzero: np.ndarray,
               n: int) -> np.ndarray:
    """(n, 16) rows for one cell kind."""
    out = np.empty((n, NUM_NODES * PICKS * 2), dtype=np.int64)
    for k, node in enumerate(range(NUM_INPUTS, NUM_INPUTS + NUM_NODES)):
        edges = np.array(node_edges(node))
        with np.errstate(divide="ignore"):
            keys = np.log(mass[edges])[None, :] + rng.gumbel(size=(n, len(edges)))
        srcs = np.sort(np.argsort(-keys, axis=1, kind="stable")[:, :PICKS], axis=1)  # input id == position
        for pick in range(PICKS):
            chosen = edges[srcs[:, pick]]
            u = rng.random(n)
            op_pos = np.minimum((u[:, None] >= cdf[chosen]).sum(axis=1), cdf.shape[1] - 1)
            out[:, 4 * k + 2 * pick] = srcs[:, pick]
            out[:, 4 * k + 2 * pick + 1] = nonzero[op_pos]
    return out


def sample_cell_archs(probabilities: Mapping[str, np.ndarray], op_names: Sequence[str], num_samples: int,
                      seed: int, edge_weights: Optional[Mapping[str, np.ndarray]] = None,
                      chunk_size: int = 100_000) -> SampleResult:
    """Draw ``num_samples`` cell genotypes (see module docstring); unique
    rows (u, 32) and their counts."""
    if num_samples < 1:
        raise ValueError(f"num_samples = {num_samples}: must be >= 1")
    tables = {k: _tables(probabilities[k], op_names, None if edge_weights is None else edge_weights[k])
              for k in KINDS}
    for kind, (mass, _, _) in tables.items():
        for node in range(NUM_INPUTS, NUM_INPUTS + NUM_NODES):
            if np.count_nonzero(mass[list(node_edges(node))]) < PICKS:
                raise ValueError(f"{kind} cell, node {node}: fewer than {PICKS} incoming edges have weight")
    rng = np.random.default_rng(seed)
    dtype = index_dtype(max(len(op_names), NUM_INPUTS + NUM_NODES))
    archs, counts = np.zeros((0, ROW_WIDTH), dtype=dtype), np.zeros(0, dtype=np.int64)
    for start in range(0, num_samples, chunk_size):
        n = min(chunk_size, num_samples - start)
        rows = np.concatenate([_draw_kind(rng, *tables[k], n) for k in KINDS], axis=1).astype(dtype)
        chunk, chunk_counts = unique_rows(rows)
        archs, counts = unique_rows(np.concatenate([archs, chunk]), np.concatenate([counts, chunk_counts]))
    return SampleResult(archs=archs, counts=counts)


def row_to_genotype(row: np.ndarray, op_names: Sequence[str]) -> CellGenotype:
    row = np.asarray(row)
    if row.shape != (ROW_WIDTH,):
        raise ValueError(f"cell architecture row: expected {ROW_WIDTH} entries, got shape {row.shape}")
    half = ROW_WIDTH // 2
    cells = [tuple((op_names[int(part[i + 1])], int(part[i])) for i in range(0, half, 2))
             for part in (row[:half], row[half:])]
    return CellGenotype(normal=cells[0], reduce=cells[1])


def genotype_to_row(genotype: CellGenotype, op_names: Sequence[str]) -> np.ndarray:
    row = []
    for kind in KINDS:
        cell = getattr(genotype, kind)
        for i in range(0, len(cell), PICKS):
            for op, src in sorted(cell[i:i + PICKS], key=lambda p: p[1]):
                row += [src, list(op_names).index(op)]
    return np.array(row, dtype=np.int64)


def path_mix(half_row: np.ndarray, op_names: Sequence[str], device: torch.device,
             edge_ops: Optional[Sequence[Sequence[str]]] = None) -> MixWeights:
    """One-path weights of one cell kind: weight 1 and the drawn op on the
    8 kept edges, weight 0 and ``none`` (or the edge's first op when P-DARTS
    pruned ``none`` there) on the others. ``edge_ops``: the supernet's op
    names per edge when they differ from ``op_names`` (P-DARTS)."""
    edge_ops = [tuple(op_names)] * len(EDGES) if edge_ops is None else [tuple(o) for o in edge_ops]
    index = torch.tensor([ops.index(ZERO) if ZERO in ops else 0 for ops in edge_ops], dtype=torch.long)
    weights = torch.zeros(len(EDGES), len(edge_ops[0]))
    for k in range(NUM_NODES):
        for pick in range(PICKS):
            src, op = int(half_row[4 * k + 2 * pick]), int(half_row[4 * k + 2 * pick + 1])
            e = edge_index(NUM_INPUTS + k, src)
            name = op_names[op]
            if name not in edge_ops[e]:
                raise ValueError(f"edge {EDGES[e]}: op {name!r} is not in the supernet there ({edge_ops[e]})")
            index[e] = edge_ops[e].index(name)
            weights[e, index[e]] = 1.0
    return MixWeights(weights.to(device), None, index.to(device))


@torch.no_grad()
def cell_outputs(net: SearchNetwork, probe: Iterable, row: np.ndarray, op_names: Sequence[str],
                 device: torch.device, edge_ops: Optional[Mapping[str, Sequence]] = None) -> list[torch.Tensor]:
    """GAP'd outputs of every cell, averaged over the probe images."""
    half = ROW_WIDTH // 2
    edge_ops = edge_ops or {}
    mixes = (path_mix(row[:half], op_names, device, edge_ops.get("normal")),
             path_mix(row[half:], op_names, device, edge_ops.get("reduce")))
    sums: list[torch.Tensor] = []
    seen = 0
    for batch in probe:
        x = (batch[0] if isinstance(batch, (tuple, list)) else batch).to(device)
        _, outs = net(x, *mixes, return_cells=True)
        pooled = [gap(o).double().sum(0) for o in outs]
        sums = pooled if not sums else [s + p for s, p in zip(sums, pooled)]
        seen += x.shape[0]
    if not seen:
        raise ValueError("the probe set is empty")
    return [s / seen for s in sums]


def cell_output_features(net: SearchNetwork, states: Iterable[Mapping[str, torch.Tensor]], archs: np.ndarray,
                         op_names: Sequence[str], probe: Iterable, device: torch.device,
                         bn: Literal["running", "batch"] = "running",
                         progress: Optional[Progress] = None,
                         edge_ops: Optional[Mapping[str, Sequence]] = None) -> np.ndarray:
    """Eq. 7 per cell: features (u, cells, η) float32 for the rows of
    ``archs``; ``states`` yields the supernet state_dict of each epoch;
    ``edge_ops`` ({"normal", "reduce"} -> op names per edge) for P-DARTS."""
    archs = np.asarray(archs)
    if archs.ndim != 2 or archs.shape[1] != ROW_WIDTH:
        raise ValueError(f"cell architectures: expected shape (u, {ROW_WIDTH}), got {archs.shape}")
    net.to(device)
    first: list[list[torch.Tensor]] = []
    columns: list[np.ndarray] = []
    states = progress(states, desc="cell features") if progress is not None else states
    for epoch, state in enumerate(states):
        net.load_state_dict(state)
        set_bn_mode(net, bn)
        outs = [cell_outputs(net, probe, row, op_names, device, edge_ops) for row in archs]
        if epoch == 0:
            first = outs
        columns.append(np.array([[float(cosine(f, o)) for f, o in zip(fa, oa)] for fa, oa in zip(first, outs)]))
    if not columns:
        raise ValueError("no checkpoints given: Eq. 7 needs at least one epoch")
    return np.stack(columns, axis=2).astype(np.float32)


def cell_arch_scores(archs: np.ndarray, probabilities: Mapping[str, np.ndarray],
                     edge_weights: Optional[Mapping[str, np.ndarray]] = None, log: bool = False) -> np.ndarray:
    """Eq. 9's "sum over layers of the operation probability", for cells:
    per row, the sum over both cells' 8 kept edges of edge_weight x p(op)
    (``log``: of log(edge_weight x p(op))). Shape (u,)."""
    archs = np.asarray(archs)
    total = np.zeros(archs.shape[0])
    half = ROW_WIDTH // 2
    for part, kind in enumerate(KINDS):
        p = np.asarray(probabilities[kind], dtype=np.float64)
        w = np.ones(len(EDGES)) if edge_weights is None else np.asarray(edge_weights[kind], dtype=np.float64)
        for k in range(NUM_NODES):
            node_start = node_edges(NUM_INPUTS + k).start
            for pick in range(PICKS):
                col = part * half + 4 * k + 2 * pick
                e = node_start + archs[:, col].astype(np.int64)
                value = w[e] * p[e, archs[:, col + 1].astype(np.int64)]
                total += np.log(np.clip(value, 1e-300, None)) if log else value
    return total
