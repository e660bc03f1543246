"""dcnas_sample: s architectures drawn layer by layer from softmax(θ) of the
final pretrain checkpoint (nas_core.dcnas.sample). Outputs archs.npy (unique
op-index rows), counts.npy, probs.npy (the table drawn from), summary.json.
For a cell ``search.strategy`` the cell space's sampler runs instead
(tasks.dcnas_cell.run_cell_sample: the search stage's edge/op tables)."""
from __future__ import annotations

from typing import Any

import numpy as np

from nas_core.config import Params
from nas_core.dcnas.sample import sample_architectures
from nas_core.io import save_npy, write_json
from tasks.dcnas_cell import run_cell_sample
from tasks.dcnas_io import final_probabilities, layerwise_space
from tasks.search_cell import is_cell_strategy

SECTIONS = ("dcnas_sample", "pretrain", "search")


def run(params: Params, ctx: Any) -> dict[str, float]:
    if is_cell_strategy(params.search.strategy):
        return run_cell_sample(params, ctx)
    return run_layerwise(params, ctx)


def run_layerwise(params: Params, ctx: Any) -> dict[str, float]:
    space = layerwise_space(params, ctx)
    epoch, probs = final_probabilities(ctx)
    if probs.shape != (space.num_layers, space.num_ops):
        raise ValueError(f"theta of the pretrain checkpoint is {probs.shape}, the space is "
                         f"{space.num_layers} x {space.num_ops}")
    result = sample_architectures(probs, params.dcnas_sample.num_samples, params.runtime.seed,
                                  progress=ctx.progress)
    save_npy(ctx.out / "archs.npy", result.archs)
    save_npy(ctx.out / "counts.npy", result.counts)
    save_npy(ctx.out / "probs.npy", probs)
    entropy = -(probs * np.log(np.clip(probs, 1e-300, None))).sum(1)
    summary = {"checkpoint_epoch": epoch, "num_drawn": result.num_drawn, "num_unique": result.num_unique,
               "max_count": int(result.counts.max()), "op_names": list(space.op_names),
               "layer_entropy": entropy.tolist(), "space_size": float(space.size)}
    write_json(ctx.out / "summary.json", summary)
    ctx.log.log_dict(summary, "dcnas_sample/summary.json")
    return {"num_drawn": result.num_drawn, "num_unique": result.num_unique,
            "duplicate_fraction": 1.0 - result.num_unique / result.num_drawn,
            "max_count": int(result.counts.max()), "mean_layer_entropy": float(entropy.mean())}
