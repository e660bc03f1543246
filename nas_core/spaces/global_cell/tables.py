"""Architecture-probability tables of the global cell space: sampling,
DC-NAS Eq. 9 and their pictures, one DARTS cell table per layer position.

Tables, one pair per layer position k (the cell space's pair per cell
kind): ``cell_<k>`` (14, n_ops), per edge a distribution over the op set,
and optionally ``edges_<k>`` (14,), a non-negative weight per edge
(DNAS-CAM: the edge's total psi; ones when absent).
Each position is drawn as the cell space draws one cell
(nas_core.spaces.cell.sampling: per node two inputs with probability
proportional to edge weight x (1 - p[none]) by the Gumbel-top-2 trick, then
an op from the non-zero ops renormalised), independently per position.
Eq. 9: the sum over the L cells' 8 kept edges of edge weight x p(op).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from nas_core.spaces.base import Progress, SampleResult, Tables, index_dtype, sample_in_chunks
from nas_core.spaces.cell import EDGES, HALF_WIDTH, NODES, NUM_INPUTS, NUM_NODES, PICKS, ZERO, node_edges

# the cell space's own helpers: one position is drawn and labelled exactly as one cell there
from nas_core.spaces.cell.render import node_label
from nas_core.spaces.cell.sampling import draw_kind, edge_tables, row_bounds
from nas_core.spaces.global_cell.genotype import kind_at

FIELDS = ("input_a", "op_a", "input_b", "op_b")


def global_bounds(n_ops: int, num_cells: int) -> np.ndarray:
    """(L * 16,) number of values of each entry of an encoded row."""
    return np.tile(row_bounds(n_ops)[:HALF_WIDTH], num_cells)


def check_global_rows(rows: np.ndarray, op_names: Sequence[str], num_cells: int) -> np.ndarray:
    """``rows`` (n, L * 16) as int64 after checking each is an encoded global
    genotype over ``op_names`` (a ValueError naming the first bad entry)."""
    rows = np.asarray(rows)
    width = num_cells * HALF_WIDTH
    if rows.ndim != 2 or rows.shape[1] != width:
        raise ValueError(f"global cell architecture rows: expected shape (n, {width}), got {rows.shape}")
    if rows.size and not np.issubdtype(rows.dtype, np.integer):
        raise ValueError(f"global cell architecture rows: expected integers, got dtype {rows.dtype}")
    rows = rows.astype(np.int64)
    bad = (rows < 0) | (rows >= global_bounds(len(op_names), num_cells))
    if ZERO in op_names:
        bad[:, 1::2] |= rows[:, 1::2] == list(op_names).index(ZERO)
    bad[:, 2::4] |= rows[:, 2::4] <= rows[:, 0::4]
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        cell, rest = divmod(j, HALF_WIDTH)
        node = NUM_INPUTS + rest // 4
        rule = (f"an op index in 0..{len(op_names) - 1}, not {ZERO!r}" if rest % 2
                else f"inputs in 0..{node - 1} with input_a < input_b")
        raise ValueError(f"global cell architecture row {i}: entry {j} (cell {cell}, node {node}, "
                         f"{FIELDS[rest % 4]}) = {rows[i, j]} is not allowed ({rule})")
    return rows


def table_keys(position: int) -> tuple[str, str]:
    """The op table's and the edge weights' key of layer position ``position``."""
    return f"cell_{position}", f"edges_{position}"


def make_tables(ops: np.ndarray, edges: Optional[np.ndarray] = None) -> dict[str, np.ndarray]:
    """Tables from stacked ``ops`` (L, 14, n_ops) and ``edges`` (L, 14)."""
    out = {}
    for k in range(len(ops)):
        op_key, edge_key = table_keys(k)
        out[op_key] = np.asarray(ops[k], dtype=np.float64)
        if edges is not None:
            out[edge_key] = np.asarray(edges[k], dtype=np.float64)
    return out


def check_tables(tables: Tables, n_ops: int, num_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Stacked (ops (L, 14, n_ops), edges (L, 14)) float64 from ``tables``,
    keys, shapes and signs checked (a ValueError naming the key)."""
    keys = [table_keys(k) for k in range(num_cells)]
    present = [edge_key in tables for _, edge_key in keys]
    if any(present) and not all(present):
        raise ValueError(f"global cell tables: give edges_0..edges_{num_cells - 1} all or none "
                         f"(missing {[e for (_, e), p in zip(keys, present) if not p]})")
    ops, edges = [], []
    for op_key, edge_key in keys:
        if op_key not in tables:
            raise ValueError(f"global cell tables: missing {op_key!r} (have {sorted(tables)})")
        ops.append(_checked(tables, op_key, (len(EDGES), n_ops)))
        edges.append(_checked(tables, edge_key, (len(EDGES),)) if all(present) else np.ones(len(EDGES)))
    return np.stack(ops), np.stack(edges)


def _checked(tables: Tables, key: str, shape: tuple[int, ...]) -> np.ndarray:
    value = np.asarray(tables[key], dtype=np.float64)
    if value.shape != shape:
        raise ValueError(f"global cell tables[{key!r}]: expected shape {shape}, got {value.shape}")
    if not np.isfinite(value).all() or (value < 0).any():
        raise ValueError(f"global cell tables[{key!r}]: entries must be finite and >= 0")
    return value


def sample_global_archs(ops: np.ndarray, edges: np.ndarray, op_names: Sequence[str], num_samples: int,
                        seed: int, progress: Optional[Progress] = None) -> SampleResult:
    """Draw ``num_samples`` global genotypes (module docstring); unique rows
    (u, L * 16) and their counts."""
    layers = []
    for k in range(ops.shape[0]):
        mass, cdf, nonzero = edge_tables(ops[k], op_names, edges[k])
        for node in NODES:
            if np.count_nonzero(mass[list(node_edges(node))]) < PICKS:
                raise ValueError(f"global cell tables, cell {k}, node {node}: fewer than {PICKS} incoming "
                                 f"edges have weight")
        layers.append((mass, cdf, nonzero))
    dtype = index_dtype(max(len(op_names), NUM_INPUTS + NUM_NODES))

    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        return np.concatenate([draw_kind(rng, *layer, n) for layer in layers], axis=1).astype(dtype)

    return sample_in_chunks(draw, num_samples, seed, progress=progress)


def global_arch_scores(rows: np.ndarray, ops: np.ndarray, edges: np.ndarray, log: bool = False) -> np.ndarray:
    """Eq. 9 per row (module docstring); ``log``: the sum of logs. Shape (n,)."""
    total = np.zeros(rows.shape[0])
    for k in range(ops.shape[0]):
        for n in range(NUM_NODES):
            start = node_edges(NUM_INPUTS + n).start
            for pick in range(PICKS):
                col = k * HALF_WIDTH + 4 * n + 2 * pick
                e = start + rows[:, col]
                value = edges[k, e] * ops[k, e, rows[:, col + 1]]
                total += np.log(np.clip(value, 1e-300, None)) if log else value
    return total


def plot_global_tables(ops: np.ndarray, edges: np.ndarray, op_names: Sequence[str], title: str = "") -> Any:
    """One heatmap per layer position of edge weight x p(op) (14, n_ops):
    what DC-NAS scores with and DARTS's rule derives from."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    num_cells = ops.shape[0]
    cols = min(num_cells, 5)
    rows = -(-num_cells // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 4.2 * rows), squeeze=False)
    strength = ops * edges[:, :, None]
    for k, ax in enumerate(axes.flat):
        if k >= num_cells:
            ax.axis("off")
            continue
        ax.imshow(strength[k], cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(op_names)), op_names, rotation=70, ha="right", fontsize=6)
        ax.set_yticks(range(len(EDGES)), [f"{node_label(n)}<-{node_label(s)}" for n, s in EDGES], fontsize=6)
        ax.set_title(f"cell {k} ({kind_at(k, num_cells)})", fontsize=8)
    fig.suptitle(title or "edge weight x op probability per cell")
    fig.tight_layout()
    return fig
