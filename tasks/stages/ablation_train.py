"""ablation_train stage: per replicate, train the s sampled channel-ratio
networks separately on the replicate's D~ for η_max epochs (dc-nas.md
Algorithm 1, lines 2-12). The architectures of all replicates fan out
together, one item each.

Outputs in artifacts/ablation_train/r<NNN>/ per replicate (a persistent
output: ``archs/`` holds one finished record per architecture, so a killed
run resumes): ``features_output.npy`` / ``features_params.npy`` (s, L, η_max)
Eq. 7 / Eq. 6, ``es_acc.npy`` (s, η_max) early-stopping validation accuracy
per epoch, ``archs.json`` (space index, ratios, params, FLOPs per row),
``replicate.json`` (seed, |D~|, |D|, σ); the DVC plot
metrics/ablation_curves.png (early-stopping accuracy per epoch, replicate 0).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from nas_core.ablation.replicates import Replicate, by_replicate, replicate_dir, replicate_jobs
from nas_core.ablation.separate import separate_job, spec_from_config, stack_records
from nas_core.ablation.store import pending, run_cached
from nas_core.config import Params
from nas_core.io import save_npy, write_json
from tasks.ablation_data import ablation_space, architecture_map, replicates, separate_data
from tasks.context import StageContext
from tasks.tracking import log_figure_file

SECTIONS = ("subset", "ablation", "spaces.channel_ratio")
PERSISTENT = True


def run(params: Params, ctx: StageContext) -> dict[str, float]:
    cfg = params.ablation
    space = ablation_space(params, ctx)
    reps = replicates(params, ctx)
    jobs = replicate_jobs(reps, lambda rep: space.sample_distinct(cfg.num_archs, rep.seed),
                          lambda rep: separate_data(ctx, rep), space, spec_from_config(cfg), str(ctx.device),
                          ctx.out / "archs", "separate")
    todo = len(pending(jobs))
    records = run_cached(jobs, separate_job, architecture_map(params, ctx, "separate training"))
    grouped = by_replicate(jobs, records)
    arrays = {rep.index: write_outputs(replicate_dir(ctx.out, rep.index), rep, grouped[rep.index]) for rep in reps}
    ctx.log.log_dict([{"replicate": job.replicate, **{k: r[k] for k in ("index", "ratios", "params", "flops",
                                                                     "val_acc", "seconds")}}
                      for job, r in zip(jobs, records)], "ablation_train/records.json")
    (ctx.root / "metrics").mkdir(exist_ok=True)
    log_figure_file(ctx.log, curves_figure(arrays[0]), ctx.root / "metrics", "ablation_curves.png")
    final = np.concatenate([a["es_acc"][:, -1] for a in arrays.values()])
    log_params = np.concatenate([np.log(a["params"]) for a in arrays.values()])
    return {"replicates": len(reps), "num_archs": len(records), "trained_now": todo, "reused": len(records) - todo,
            "train_seconds_total": float(sum(r["seconds"] for r in records)),
            "es_acc_mean": float(final.mean()), "es_acc_max": float(final.max()),
            "es_acc_corr_log_params": float(np.corrcoef(final, log_params)[0, 1])}


def write_outputs(out: Path, rep: Replicate, records: list[dict]) -> dict[str, np.ndarray]:
    arrays = stack_records(records)
    save_npy(out / "features_output.npy", arrays["feat_output"])
    save_npy(out / "features_params.npy", arrays["feat_params"])
    save_npy(out / "es_acc.npy", arrays["es_acc"])
    write_json(out / "archs.json", {"index": arrays["index"].tolist(), "ratios": arrays["ratios"].tolist(),
                                    "params": arrays["params"].tolist(), "flops": arrays["flops"].tolist()})
    write_json(out / "replicate.json", rep.describe())
    return arrays


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
