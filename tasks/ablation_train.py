"""ablation_train stage: train the s sampled channel-ratio networks
separately on D~ for η_max epochs (dc-nas.md Algorithm 1, lines 2-12).

Outputs in artifacts/ablation_train/ (a persistent output: ``archs/`` holds
one finished record per architecture, so a killed run resumes):
``features_output.npy`` / ``features_params.npy`` (s, L, η_max) Eq. 7 / Eq. 6,
``es_acc.npy`` (s, η_max) early-stopping validation accuracy per epoch,
``archs.json`` (space index, ratios, params, FLOPs per row); the DVC plot
metrics/ablation_curves.png (early-stopping accuracy per epoch).
"""
from __future__ import annotations

import numpy as np

from nas_core.ablation.separate import make_jobs, separate_job, spec_from_config, stack_records
from nas_core.ablation.store import pending, run_cached
from nas_core.config import Params
from nas_core.io import save_npy, write_json
from tasks.ablation_data import ablation_space, architecture_map, separate_data
from tasks.context import StageContext
from tasks.tracking import log_figure_file

SECTIONS = ("subset", "ablation", "spaces.channel_ratio")
PERSISTENT = True


def run(params: Params, ctx: StageContext) -> dict[str, float]:
    cfg = params.ablation
    space = ablation_space(params, ctx)
    indices = space.sample_distinct(cfg.num_archs, params.runtime.seed)
    jobs = make_jobs(indices, space, spec_from_config(cfg), separate_data(ctx), ctx.device,
                     params.runtime.seed, ctx.out / "archs", "separate")
    todo = len(pending(jobs))
    records = run_cached(jobs, separate_job, architecture_map(params, ctx, "separate training"))
    arrays = stack_records(records)
    write_outputs(ctx, arrays)
    seconds = float(sum(r["seconds"] for r in records))
    ctx.log.log_dict([{k: r[k] for k in ("index", "ratios", "params", "flops", "val_acc", "seconds")}
                      for r in records], "ablation_train/records.json")
    (ctx.root / "metrics").mkdir(exist_ok=True)
    log_figure_file(ctx.log, curves_figure(arrays), ctx.root / "metrics", "ablation_curves.png")
    final = arrays["es_acc"][:, -1]
    return {"num_archs": len(records), "trained_now": todo, "reused": len(records) - todo,
            "train_seconds_total": seconds, "es_acc_mean": float(final.mean()), "es_acc_max": float(final.max()),
            "es_acc_corr_log_params": float(np.corrcoef(final, np.log(arrays["params"]))[0, 1])}


def write_outputs(ctx: StageContext, arrays: dict[str, np.ndarray]) -> None:
    save_npy(ctx.out / "features_output.npy", arrays["feat_output"])
    save_npy(ctx.out / "features_params.npy", arrays["feat_params"])
    save_npy(ctx.out / "es_acc.npy", arrays["es_acc"])
    write_json(ctx.out / "archs.json", {"index": arrays["index"].tolist(), "ratios": arrays["ratios"].tolist(),
                                        "params": arrays["params"].tolist(), "flops": arrays["flops"].tolist()})


def curves_figure(arrays: dict[str, np.ndarray]):
    """Early-stopping validation accuracy per epoch, coloured by log params
    (Figure 2: small networks lead early)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc, params = arrays["es_acc"] * 100, np.log10(arrays["params"])
    epochs = np.arange(1, acc.shape[1] + 1)
    fig, ax = plt.subplots(figsize=(6, 4))
    cmap = plt.get_cmap("viridis")
    norm = plt.Normalize(params.min(), params.max())
    for row, p in zip(acc, params):
        ax.plot(epochs, row, color=cmap(norm(p)), alpha=0.6, lw=1)
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="log10 params")
    ax.set_xlabel("epoch on D~")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Separately trained channel-ratio networks")
    fig.tight_layout()
    return fig
