"""The picture of a global genotype (DNAS-CAM's Fig. 5: which ops appear at
which depth). Left: one row per cell, stem at the top, one box per kept
edge (node, its input) coloured by op; right: how many kept edges of each
op every cell has, so a shift of op types with depth (the paper reports
convolutions in shallow cells and skip-connects in deep ones) is visible at
a glance."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from nas_core.io import atomic_path
from nas_core.spaces.cell import NUM_INPUTS
from nas_core.spaces.cell.render import node_label
from nas_core.spaces.global_cell.genotype import GlobalCellGenotype


def render_global(genotype: GlobalCellGenotype, op_names: Sequence[str], path: str | Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops = [name for name in op_names if any(name in {o for o, _ in cell} for cell in genotype.cells)]
    colours = {name: plt.get_cmap("tab10")(j % 10) for j, name in enumerate(op_names)}
    depth = genotype.num_cells
    fig, (grid, bars) = plt.subplots(1, 2, figsize=(15, 0.55 * depth + 2), width_ratios=(3, 1),
                                     squeeze=True)
    for k, cell in enumerate(genotype.cells):
        for i, (op, src) in enumerate(cell):
            grid.add_patch(plt.Rectangle((i, k), 0.95, 0.9, facecolor=colours[op], alpha=0.75))
            grid.text(i + 0.47, k + 0.45, f"{op}\n<- {node_label(src)}", ha="center", va="center", fontsize=6)
    grid.set_xlim(0, len(genotype.cells[0]))
    grid.set_ylim(depth, 0)
    grid.set_xticks([i + 0.47 for i in range(len(genotype.cells[0]))],
                    [f"n{i // NUM_INPUTS}" for i in range(len(genotype.cells[0]))], fontsize=7)
    grid.set_yticks([k + 0.45 for k in range(depth)], [f"{k} {genotype.kind(k)}" for k in range(depth)],
                    fontsize=7)
    grid.set_title(f"{title} kept edges per cell (stem at the top)".strip(), fontsize=9)
    left = [0] * depth
    for name in ops:
        counts = [sum(1 for o, _ in cell if o == name) for cell in genotype.cells]
        bars.barh([k + 0.45 for k in range(depth)], counts, left=left, color=colours[name], label=name)
        left = [a + b for a, b in zip(left, counts)]
    bars.set_ylim(depth, 0)
    bars.set_yticks([])
    bars.set_xlabel("kept edges")
    bars.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    bars.set_title("ops per cell", fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
