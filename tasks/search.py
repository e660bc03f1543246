"""search stage: the chosen strategy's result (``search.strategy``).

* Cell strategies (class attribute ``space_kind == "cell"``): the DARTS-cell
  search of tasks/search_cell.py.
* ``fbnet``: no training here. The pretrain stage *is* FBNet's search; this
  stage loads its newest good checkpoint (which must be the last epoch) and
  derives FBNet's architecture, argmax θ per layer. Writes into ``ctx.out``:
  ``probabilities.csv`` (layers x ops, softmax θ), ``genotype.json``
  (``Genotype.to_json``), ``cost.json`` (FLOPs, params, latency from the
  pretrain stage's measured table) and ``theta_heatmap.png`` (θ over the
  epochs, one panel per layer); all logged to MLflow.

``strategy.txt`` names the strategy of the files in the (persistent)
output; switching strategies empties the directory first.
"""
from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from nas_core.config import Params, ParamsError
from nas_core.cost import LatencyTable, genotype_cost
from nas_core.data import DataError
from nas_core.io import atomic_path, write_json, write_text
from nas_core.strategies import STRATEGIES, SearchResult
from nas_core.train import latest_good_checkpoint
from tasks.pretrain import CHECKPOINTS, LATENCY_FILE, layerwise_space, search_data
from tasks.search_cell import is_cell_strategy, run_cell_search

SECTIONS = ("search", "pretrain")
# Persistent (dvc.yaml `persist: true`): a killed cell search resumes from
# artifacts/search/checkpoints; every result file is written atomically.
PERSISTENT = True
FROM_PRETRAIN = ("fbnet",)


STRATEGY_FILE = "strategy.txt"


def run(params: Params, ctx: Any) -> dict[str, float]:
    name = params.search.strategy
    if not (is_cell_strategy(name) or name in FROM_PRETRAIN):
        raise ParamsError(f"search.strategy = {name!r}: the search stage runs cell strategies and "
                          f"{', '.join(FROM_PRETRAIN)}")
    keep_one_strategy(ctx.out, name)
    if is_cell_strategy(name):
        return run_cell_search(params, ctx)
    return run_fbnet_search(params, ctx)


def keep_one_strategy(out: Path, name: str) -> None:
    """The output persists between runs (so a killed cell search resumes);
    when the previous run used another strategy (``strategy.txt``), its
    files are removed first, so the output only ever holds one strategy's
    result and a cell search does not log FBNet's leftovers."""
    marker = out / STRATEGY_FILE
    if marker.is_file() and marker.read_text().strip() != name:
        for child in out.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()
    write_text(marker, name + "\n")


def last_pretrain_state(params: Params, ctx: Any) -> dict[str, Any]:
    directory = ctx.artifacts("pretrain") / CHECKPOINTS
    found = latest_good_checkpoint(directory)
    if found is None:
        raise DataError(f"{directory}: no pretrain checkpoint; run `nasflow stage pretrain` first")
    epoch, state = found
    if epoch != params.pretrain.epochs:
        raise DataError(f"{directory}: newest good checkpoint is epoch {epoch} of "
                                f"pretrain.epochs = {params.pretrain.epochs}; rerun the pretrain stage")
    return state


def run_fbnet_search(params: Params, ctx: Any) -> dict[str, float]:
    space = layerwise_space(params, ctx)
    latency_path = ctx.artifacts("pretrain") / LATENCY_FILE
    if not latency_path.is_file():
        raise DataError(f"{latency_path}: missing; run `nasflow stage pretrain` first")
    latency = LatencyTable.load(latency_path)
    state = last_pretrain_state(params, ctx)
    strategy = STRATEGIES.get(params.search.strategy)(space, params.pretrain, ctx.device, params.runtime.seed,
                                                      latency=latency)
    result = strategy.run(search_data(params, ctx, params.pretrain.batch_size), state=state)
    cost = write_fbnet_result(result, ctx.out, space, latency, int(state["epoch"]))
    ctx.log.set_tags({"nasflow.genotype": str(result.genotype)})
    ctx.log.log_dict(result.genotype.to_dict(), "search/genotype.json")
    for name in ("probabilities.csv", "genotype.json", "cost.json", "theta_heatmap.png"):
        ctx.log.log_artifact(ctx.out / name, "search")
    entropy = result.history[-1]["theta_entropy"] if result.history else math.nan
    return {"flops": float(cost["flops"]), "params": float(cost["params"]), "latency_ms": cost["latency_ms"],
            "theta_entropy": entropy, "checkpoint_epoch": float(state["epoch"])}


def write_fbnet_result(result: SearchResult, out: Path, space: Any, latency: LatencyTable,
                       epoch: int) -> dict[str, Any]:
    genotype = result.genotype
    probs = result.probabilities["layers"]
    write_probabilities(out / "probabilities.csv", probs, result.op_names)
    write_text(out / "genotype.json", genotype.to_json() + "\n")
    c = genotype_cost(space, genotype)
    cost = {"genotype": str(genotype), "flops": c.flops, "params": c.params,
            "flops_convention": "multiply-adds per image",
            "latency_ms": latency.genotype_ms(genotype), "latency_device": latency.device,
            "expected_latency_ms": latency.expected_ms(probs), "checkpoint_epoch": epoch}
    write_json(out / "cost.json", cost)
    fig = theta_heatmap(result.extras["theta_history"], result.op_names, str(genotype))
    with atomic_path(out / "theta_heatmap.png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return cost


def write_probabilities(path: Path, probs: np.ndarray, op_names: list[str]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["layer", *op_names])
        for layer, row in enumerate(np.asarray(probs)):
            writer.writerow([layer, *(f"{v:.6g}" for v in row)])


def theta_heatmap(theta_history: np.ndarray, op_names: list[str], title: str) -> Any:
    """One panel per layer: θ minus its mean over ops (x: op, y: epoch) on
    one symmetric diverging scale, so early, small movements show (softmax
    is monotone: the reddest cell of the last row is the argmax op)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
