"""evaluate: per-cluster evaluation, one fan-out task per cluster (flows/
fanout.py, task runner from params.runtime). Each cluster's candidates
(its Eq. 9 pick, or the top-m for ``selection: eq8``) are scored by the
evaluator ``evaluate.evaluator`` (nas_core.evaluators), the same trial code
a multi-trial search runs (tasks/trials.py): ``train`` (the default) is the
paper's Eq. 8 — early-stopped training on D~ (``subset`` split) for
``evaluate.epochs`` epochs with the ``evaluators.train`` settings, scored on
the validation split; ``zero_cost`` or ``supernet`` score without training.
The cluster keeps the candidate with the best score (ties -> the first,
i.e. the larger Eq. 9 score). Every candidate of a cluster gets the same
seed (``runtime.seed``), as every trained network of the pipeline does.

A nested MLflow run per cluster holds its candidates' metrics
(``cand{j}_<metric>``; a training evaluator logs them per epoch as each
ends, with a progress line in the stage log: tasks/live.py). Output
representatives.json (each candidate with its metrics; ``score`` is what
was compared). Candidates carry their genotype; the space builds its
network and says how it trains (``training_recipe``)."""
from __future__ import annotations

import json
from typing import Any, Optional

from nas_core.config import Params
from nas_core.io import write_json
from nas_core.spaces import SearchSpace
from nas_core.strategies import SupernetSpec
from nas_core.strategies.multi_trial import TrialRequest
from tasks.context import StageContext
from tasks.live import LiveRun
from tasks.nas import build_space, need
from tasks.placement import threads_per_task
from tasks.trials import TrialJob, evaluator_supernet, final_metrics, run_trial

SECTIONS = ("evaluate", "evaluators", "dcnas_cluster", "search")


def cluster_jobs(params: Params, ctx: StageContext, space: SearchSpace, cluster: dict[str, Any], log: Any,
                 supernet: Optional[SupernetSpec] = None) -> list[TrialJob]:
    """The cluster's candidates as trials of ``evaluate.evaluator``;
    candidate j reports its epochs live to the cluster's run ``log`` as
    ``cand{j}_<metric>``."""
    cfg = params.evaluate
    settings = getattr(params.evaluators, cfg.evaluator).model_dump(mode="json")
    jobs = []
    for j, candidate in enumerate(cluster["candidates"]):
        name = f"cluster{cluster['cluster']}-cand{j}"
        request = TrialRequest(j, space.genotype_from_dict(candidate["genotype"]), params.runtime.seed, cfg.epochs)
        jobs.append(TrialJob(request, space, cfg.evaluator, settings, params.data, str(ctx.root),
                             str(ctx.artifacts("subset")), supernet, params.runtime.device,
                             threads_per_task(params.runtime),
                             LiveRun.for_run(log, name, cfg.epochs, prefix=f"cand{j}_", stage=ctx.name)))
    return jobs


def evaluate_cluster(jobs: list[TrialJob]) -> list[dict[str, Any]]:
    """One fan-out item: score a cluster's candidates one after another."""
    return [run_trial(job) for job in jobs]


def pick(cluster: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    """Eq. 8 inside the cluster: the best score, first on ties."""
    best = max(range(len(results)), key=lambda j: (results[j]["metrics"]["score"], -j))
    candidates = [{**c, **r["metrics"]} for c, r in zip(cluster["candidates"], results)]
    return {**candidates[best], "cluster": cluster["cluster"], "size": cluster["size"], "candidates": candidates}


def run(params: Params, ctx: StageContext) -> dict[str, float]:
    source = need(ctx.artifacts("dcnas_cluster") / "representatives.json", "dcnas_cluster")
    clusters = json.loads(source.read_text())["clusters"]
    space = build_space(params, ctx, "none")
    supernet = evaluator_supernet(params, ctx, space, params.evaluate.evaluator)
    names = [f"cluster{c['cluster']}" for c in clusters]
    runs = [ctx.log.child(f"evaluate:{name}", tags={"nasflow.cluster": str(c["cluster"])})
            for name, c in zip(names, clusters)]
    jobs = [cluster_jobs(params, ctx, space, c, log, supernet) for c, log in zip(clusters, runs)]
    results = ctx.fan_out_with_runs(evaluate_cluster, jobs, runs, names, "evaluate-clusters")
    picks = []
    for cluster, cluster_results, log in zip(clusters, results, runs):
        chosen = pick(cluster, cluster_results)
        picks.append(chosen)
        log.log_params({"cluster": cluster["cluster"], "size": cluster["size"], "chosen": chosen["label"][:500],
                        "num_candidates": len(cluster_results), "evaluator": params.evaluate.evaluator})
        for j, result in enumerate(cluster_results):
            log.log_metrics({f"cand{j}_{k}": v for k, v in final_metrics(result).items()})
        log.log_metrics({"score": chosen["score"], "eq9": chosen["eq9"]})
        log.log_dict(chosen, "pick.json")
        log.end("FINISHED")
    write_json(ctx.out / "representatives.json", {"clusters": picks, "evaluator": params.evaluate.evaluator})
    metrics = {f"cluster{p['cluster']}_score": p["score"] for p in picks}
    metrics.update(best_score=max(p["score"] for p in picks),
                   mean_score=sum(p["score"] for p in picks) / len(picks))
    return metrics
