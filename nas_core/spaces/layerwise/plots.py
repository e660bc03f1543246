"""Pictures of the layer-wise space (matplotlib, Agg backend; imported
lazily so loading the space stays light): a genotype as a column of
boxes, the (layers x ops) probability table as a heatmap, and FBNet's θ
over the epochs, one panel per layer."""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from nas_core.io import atomic_path
from nas_core.spaces.layerwise.genotype import LayerwiseGenotype

if TYPE_CHECKING:
    from nas_core.spaces.layerwise.space import LayerwiseSpace


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _boxes(space: "LayerwiseSpace", genotype: LayerwiseGenotype) -> list[tuple[str, int]]:
    """(text, colour index; -1 = fixed part) of each box, input to output."""
    c, h, w = space.input_shape
    boxes = [(f"stem  3x3 conv  {c}->{space.stem_channels} ch, stride {space.stem_stride}", -1)]
    for i, (op, spec) in enumerate(zip(genotype.ops, space.layers)):
        boxes.append((f"layer {i}  {op}  {spec.in_channels}->{spec.out_channels} ch, stride {spec.stride}",
                      space.op_names.index(op)))
    last = space.layers[-1].out_channels
    boxes.append((f"head  1x1 conv {last}->{space.head_channels} ch, pool, fc -> {space.num_classes}", -1))
    return boxes


def render_genotype(space: "LayerwiseSpace", genotype: LayerwiseGenotype, path: str | Path,
                    title: str = "") -> Path:
    """One box per layer (op name, channels, stride) from stem to head,
    coloured by op; written atomically as PNG."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    boxes = _boxes(space, genotype)
    cmap = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(6.2, 0.5 * len(boxes) + 0.8))
    for row, (text, colour) in enumerate(boxes):
        y = len(boxes) - 1 - row
        face = "#dddddd" if colour < 0 else cmap(colour % cmap.N)
        ax.add_patch(plt.Rectangle((0.05, y + 0.12), 0.9, 0.76, facecolor=face, edgecolor="black", alpha=0.85))
        ax.text(0.5, y + 0.5, text, ha="center", va="center", fontsize=8, family="monospace")
        if row:
            ax.annotate("", xy=(0.5, y + 0.88), xytext=(0.5, y + 1.12), arrowprops={"arrowstyle": "->"})
    ax.set_xlim(0, 1)
    ax.set_ylim(0, len(boxes))
    ax.axis("off")
    ax.set_title(title or f"{genotype.space}/{genotype.preset}", fontsize=9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_layer_table(probs: np.ndarray, op_names: Sequence[str], title: str = "") -> Any:
    """Heatmap of a (layers, ops) probability table; the most likely op of
    each layer is marked."""
    plt = _pyplot()
    layers = probs.shape[0]
    fig, ax = plt.subplots(figsize=(0.55 * len(op_names) + 2.2, 0.35 * layers + 1.6))
    image = ax.imshow(probs, cmap="viridis", aspect="auto")  # auto scale: early tables are flat
    best = probs.argmax(1)
    ax.scatter(best, np.arange(layers), marker="o", s=18, facecolors="none", edgecolors="white")
    ax.set_xticks(range(len(op_names)), op_names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(layers), [f"layer {i}" for i in range(layers)], fontsize=7)
    ax.set_title(f"{title} operation probabilities".strip(), fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def theta_heatmap(theta_history: np.ndarray, op_names: Sequence[str], title: str) -> Any:
    """One panel per layer: θ minus its mean over ops (x: op, y: epoch) on
    one symmetric diverging scale, so early, small movements show (softmax
    is monotone: the reddest cell of the last row is the argmax op)."""
    plt = _pyplot()
    epochs, layers, _ = theta_history.shape
    centred = theta_history - theta_history.mean(axis=2, keepdims=True)
    scale = float(np.abs(centred).max()) or 1.0
    cols = min(layers, 6)
    rows = math.ceil(layers / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 0.25 * max(epochs, 4) * rows + 1.2),
                             squeeze=False, sharey=True)
    image = None
    for layer, ax in enumerate(axes.flat):
        if layer >= layers:
            ax.axis("off")
            continue
        image = ax.imshow(centred[:, layer, :], aspect="auto", vmin=-scale, vmax=scale, cmap="RdBu_r",
                          extent=(-0.5, len(op_names) - 0.5, epochs + 0.5, 0.5))
        ax.set_title(f"layer {layer}", fontsize=8)
        ax.set_xticks(range(len(op_names)))
        ax.set_xticklabels(op_names, rotation=90, fontsize=6)
        ax.tick_params(axis="y", labelsize=6)
    for ax in axes[:, 0]:
        ax.set_ylabel("epoch", fontsize=7)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label="θ − mean over ops")
    fig.suptitle(f"θ over epochs — {title}", fontsize=9)
    return fig
