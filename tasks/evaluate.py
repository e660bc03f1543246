"""evaluate: per-cluster evaluation, one fan-out task per cluster (flows/
fanout.py, task runner from params.runtime). Each cluster's candidates
(its Eq. 9 pick, or the top-m for ``selection: eq8``) are trained
early-stopped on D~ (``subset`` split, ``evaluate.epochs``) and scored on
the validation split; the cluster keeps the best (Eq. 8; ties -> the
candidate with the larger Eq. 9 score). A nested MLflow run per cluster
holds its candidates' learning curves. Output representatives.json.
Candidates carry their genotype; the space builds its network and says
how it trains (``training_recipe``: DARTS's evaluation recipe on cells)."""
from __future__ import annotations

import json
from typing import Any

from nas_core.config import Params
from nas_core.io import write_json
from nas_core.spaces import SearchSpace
from nas_core.train.fit import FitSettings
from tasks.dcnas_train import TrainJob, log_history, train_candidate
from tasks.nas import build_space, need
from tasks.placement import threads_per_task

SECTIONS = ("evaluate", "dcnas_cluster", "search")


def cluster_jobs(params: Params, ctx: Any, space: SearchSpace, cluster: dict[str, Any]) -> list[TrainJob]:
    cfg = params.evaluate
    settings = FitSettings(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=params.runtime.seed,
                           **space.training_recipe())
    return [TrainJob(name=f"cluster{cluster['cluster']}-cand{j}", space=space, genotype=c["genotype"],
                     settings=settings, data=params.data, project_root=str(ctx.root),
                     subset_dir=str(ctx.artifacts("subset")), train_split="subset", device=params.runtime.device,
                     threads=threads_per_task(params.runtime))
            for j, c in enumerate(cluster["candidates"])]


def evaluate_cluster(jobs: list[TrainJob]) -> list[dict[str, Any]]:
    """One fan-out item: train a cluster's candidates one after another."""
    return [train_candidate(job) for job in jobs]


def pick(cluster: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    """Eq. 8 inside the cluster: best validation accuracy, first on ties."""
    best = max(range(len(results)), key=lambda j: (results[j]["val_acc"], -j))
    candidates = [{**c, "val_acc": r["val_acc"], "best_val_acc": r["best_val_acc"]}
                  for c, r in zip(cluster["candidates"], results)]
    return {**candidates[best], "cluster": cluster["cluster"], "size": cluster["size"], "candidates": candidates}


def run(params: Params, ctx: Any) -> dict[str, float]:
    source = need(ctx.artifacts("dcnas_cluster") / "representatives.json", "dcnas_cluster")
    clusters = json.loads(source.read_text())["clusters"]
    space = build_space(params, ctx, "none")
    jobs = [cluster_jobs(params, ctx, space, c) for c in clusters]
    names = [f"cluster{c['cluster']}" for c in clusters]
    runs = [ctx.log.child(f"evaluate:{name}", tags={"nasflow.cluster": str(c["cluster"])})
            for name, c in zip(names, clusters)]
    results = ctx.fan_out_with_runs(evaluate_cluster, jobs, runs, names, "evaluate-clusters")
    picks = []
    for cluster, cluster_results, log in zip(clusters, results, runs):
        chosen = pick(cluster, cluster_results)
        picks.append(chosen)
        log.log_params({"cluster": cluster["cluster"], "size": cluster["size"], "chosen": chosen["label"][:500],
                        "num_candidates": len(cluster_results)})
        for j, result in enumerate(cluster_results):
            log_history(log, result, prefix=f"cand{j}_")
        log.log_metrics({"val_acc": chosen["val_acc"], "eq9": chosen["eq9"]})
        log.log_dict(chosen, "pick.json")
        log.end("FINISHED")
    write_json(ctx.out / "representatives.json", {"clusters": picks})
    metrics = {f"cluster{p['cluster']}_val_acc": p["val_acc"] for p in picks}
    metrics.update(best_val_acc=max(p["val_acc"] for p in picks),
                   mean_val_acc=sum(p["val_acc"] for p in picks) / len(picks))
    return metrics
