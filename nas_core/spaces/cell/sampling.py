"""The cell space's fixed-length encoding, sampling from architecture-
probability tables and DC-NAS Eq. 9 (moved from nas_core.dcnas.cell_paths).

Encoding: a genotype is one integer row of :data:`ROW_WIDTH` = 32 entries:
for the normal then the reduction cell, for nodes 2..5,
``(input_a, op_a, input_b, op_b)`` with input_a < input_b and op indices
into the space's op set. Identical genotypes (up to the order of a node's
two inputs) give identical rows; the concatenated nodes are not encoded
(every genotype of the space concatenates all four).

Sampling (the cell analogue of "normalise the probabilities of the
operations in the same layer and draw"; DC-NAS has no cell space, so these
are our choices):
- per node, its two inputs are drawn without replacement with probability
  proportional to the edge's mass of non-zero ops,
  q_e = edge_weight_e * (1 - p_e[none]) (edge_weight: PC-DARTS's softmax
  beta, 1 for the others), via the Gumbel-top-2 trick;
- on each drawn edge the op is drawn from p_e restricted to the non-zero ops
  and renormalised. ``none`` is never drawn (DARTS's derivation rule).

Eq. 9 for cells: per row, the sum over both cells' 8 kept edges of
edge_weight x p(op).
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from nas_core.spaces.base import Progress, SampleResult, index_dtype, sample_in_chunks
from nas_core.spaces.cell.genotype import EDGES, KINDS, NODES, NUM_INPUTS, NUM_NODES, ZERO, CellGenotype, node_edges

PICKS = 2
HALF_WIDTH = NUM_NODES * PICKS * 2
ROW_WIDTH = len(KINDS) * HALF_WIDTH
SAMPLE_CHUNK = 100_000


def row_bounds(n_ops: int) -> np.ndarray:
    """(32,) number of values each entry can take: inputs of node n in
    0..n-1, op indices in 0..n_ops-1."""
    half = [b for node in NODES for _ in range(PICKS) for b in (node, n_ops)]
    return np.array(half * len(KINDS), dtype=np.int64)


def check_cell_rows(rows: np.ndarray, op_names: Sequence[str]) -> np.ndarray:
    """``rows`` (n, 32) as int64 after checking each is an encoded genotype
    over ``op_names`` (a ValueError naming the first bad entry)."""
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[1] != ROW_WIDTH:
        raise ValueError(f"cell architecture rows: expected shape (n, {ROW_WIDTH}), got {rows.shape}")
    if rows.size and not np.issubdtype(rows.dtype, np.integer):
        raise ValueError(f"cell architecture rows: expected integers, got dtype {rows.dtype}")
    rows = rows.astype(np.int64)
    bounds = row_bounds(len(op_names))
    bad = (rows < 0) | (rows >= bounds)
    zero = list(op_names).index(ZERO) if ZERO in op_names else -1
    bad[:, 1::2] |= rows[:, 1::2] == zero
    bad[:, 2::4] |= rows[:, 2::4] <= rows[:, 0::4]  # input_b > input_a
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(f"cell architecture row {i}: {_entry_name(j)} = {rows[i, j]} is not allowed "
                         f"({_entry_rule(j, op_names)})")
    return rows


def _entry_name(j: int) -> str:
    kind, rest = KINDS[j // HALF_WIDTH], j % HALF_WIDTH
    node, field = NUM_INPUTS + rest // 4, ("input_a", "op_a", "input_b", "op_b")[rest % 4]
    return f"entry {j} ({kind} cell, node {node}, {field})"


def _entry_rule(j: int, op_names: Sequence[str]) -> str:
    node, field = NUM_INPUTS + (j % HALF_WIDTH) // 4, (j % HALF_WIDTH) % 4
    if field % 2:
        return f"an op index in 0..{len(op_names) - 1}, not {ZERO!r}"
    return f"inputs in 0..{node - 1} with input_a < input_b"


def row_to_genotype(row: np.ndarray, op_names: Sequence[str]) -> CellGenotype:
    """The genotype of an encoded row (ValueError naming a bad entry)."""
    row = np.asarray(row)
    if row.shape != (ROW_WIDTH,):
        raise ValueError(f"cell architecture row: expected {ROW_WIDTH} entries, got shape {row.shape}")
    row = check_cell_rows(row[None, :], op_names)[0]
    cells = [tuple((op_names[int(part[i + 1])], int(part[i])) for i in range(0, HALF_WIDTH, 2))
             for part in (row[:HALF_WIDTH], row[HALF_WIDTH:])]
    return CellGenotype(normal=cells[0], reduce=cells[1])


def genotype_to_row(genotype: CellGenotype, op_names: Sequence[str]) -> np.ndarray:
    """The row of ``genotype`` (ValueError for an op outside ``op_names``)."""
    names = list(op_names)
    row = []
    for kind in KINDS:
        cell = getattr(genotype, kind)
        for i in range(0, len(cell), PICKS):
            for op, src in sorted(cell[i:i + PICKS], key=lambda p: p[1]):
                if op not in names:
                    raise ValueError(f"{kind} cell, node {NUM_INPUTS + i // PICKS}: op {op!r} is not in the "
                                     f"op set ({', '.join(names)})")
                row += [src, names.index(op)]
    return np.array(row, dtype=np.int64)


def canonical_tokens(op_names: Sequence[str], bound: int, j: int, prefixes: np.ndarray) -> np.ndarray:
    """The values (of ``bound``) entry ``j`` of a canonical row may take
    after ``prefixes`` (n, j): per node (input_a, op_a, input_b, op_b) with
    input_a < input_b and no op ``none`` (the order :func:`genotype_to_row`
    writes; the global cell space repeats it per cell)."""
    vocab = np.arange(bound)
    field, node = (j % HALF_WIDTH) % 4, NUM_INPUTS + (j % HALF_WIDTH) // 4
    zero = list(op_names).index(ZERO) if ZERO in op_names else -1
    if field % 2:
        return np.broadcast_to(vocab != zero, (len(prefixes), len(vocab))).copy()
    if field == 0:
        return np.broadcast_to(vocab < node - 1, (len(prefixes), len(vocab))).copy()
    return vocab[None, :] > prefixes[:, j - 2][:, None]


def edge_tables(probabilities: np.ndarray, op_names: Sequence[str], edge_weights: Optional[np.ndarray]):
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


def draw_kind(rng: np.random.Generator, mass: np.ndarray, cdf: np.ndarray, nonzero: np.ndarray,
               n: int) -> np.ndarray:
    """(n, 16) rows for one cell kind."""
    out = np.empty((n, HALF_WIDTH), dtype=np.int64)
    for k, node in enumerate(NODES):
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
                      chunk_size: int = SAMPLE_CHUNK, progress: Optional[Progress] = None) -> SampleResult:
    """Draw ``num_samples`` cell genotypes (see module docstring); unique
    rows (u, 32) and their counts."""
    tables = {k: edge_tables(probabilities[k], op_names, None if edge_weights is None else edge_weights[k])
              for k in KINDS}
    for kind, (mass, _, _) in tables.items():
        for node in NODES:
            if np.count_nonzero(mass[list(node_edges(node))]) < PICKS:
                raise ValueError(f"{kind} cell, node {node}: fewer than {PICKS} incoming edges have weight")
    dtype = index_dtype(max(len(op_names), NUM_INPUTS + NUM_NODES))

    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        return np.concatenate([draw_kind(rng, *tables[k], n) for k in KINDS], axis=1).astype(dtype)

    return sample_in_chunks(draw, num_samples, seed, chunk_size, progress)


def cell_arch_scores(archs: np.ndarray, probabilities: Mapping[str, np.ndarray],
                     edge_weights: Optional[Mapping[str, np.ndarray]] = None, log: bool = False) -> np.ndarray:
    """Eq. 9's "sum over layers of the operation probability", for cells:
    per row, the sum over both cells' 8 kept edges of edge_weight x p(op)
    (``log``: of log(edge_weight x p(op))). Shape (u,)."""
    archs = np.asarray(archs)
    total = np.zeros(archs.shape[0])
    for part, kind in enumerate(KINDS):
        p = np.asarray(probabilities[kind], dtype=np.float64)
        w = np.ones(len(EDGES)) if edge_weights is None else np.asarray(edge_weights[kind], dtype=np.float64)
        for k in range(NUM_NODES):
            node_start = node_edges(NUM_INPUTS + k).start
            for pick in range(PICKS):
                col = part * HALF_WIDTH + 4 * k + 2 * pick
                e = node_start + archs[:, col].astype(np.int64)
                value = w[e] * p[e, archs[:, col + 1].astype(np.int64)]
                total += np.log(np.clip(value, 1e-300, None)) if log else value
    return total
