"""dcnas_cluster: Eq. 5 k-means over the features, then the representative
of each cluster (nas_core.dcnas.cluster / select):

- ``selection: eq9``: the member with the largest Σ_l a(N^l) (Eq. 9);
- ``eq9_log``: the largest Σ_l log a(N^l);
- ``eq8``: the ``top_m`` members by Eq. 9 become candidates; the evaluate
  stage trains them early-stopped on D~ and keeps the best (Eq. 8).

Eq. 9 and the candidates' genotypes depend on the space of
``search.strategy`` (layer-wise: :func:`layerwise_candidates`; cell:
tasks.dcnas_cell.cell_candidates); each candidate has ``index``, ``ops``,
``genotype`` (the dict evaluate/retrain train) and ``eq9``.

Outputs clusters.npy (label per row of archs.npy), centers.npy,
representatives.json, summary.json and two plots."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from nas_core.config import Params, ParamsError
from nas_core.dcnas.cluster import cluster_features
from nas_core.dcnas.plots import cluster_mean_curves, cluster_scatter
from nas_core.dcnas.select import eq9_scores, top_per_cluster
from nas_core.io import load_npy, save_npy, write_json
from tasks.dcnas_cell import cell_candidates
from tasks.dcnas_io import genotype_of, layerwise_space, load_samples, need
from tasks.search_cell import is_cell_strategy
from tasks.tracking import log_figure_file

SECTIONS = ("dcnas_cluster", "search")
Describe = Callable[[int], dict[str, Any]]  # row index of archs.npy -> candidate fields


def _cluster(params: Params, features: np.ndarray, counts: np.ndarray):
    cfg = params.dcnas_cluster
    try:
        return cluster_features(features, cfg.k, params.runtime.seed, cfg.minibatch_threshold,
                                cfg.silhouette_sample, weights=counts)
    except ValueError as exc:  # K above the number of (distinct) architectures
        raise ParamsError(str(exc)) from None


def layerwise_candidates(params: Params, ctx: Any, archs: np.ndarray, probs: np.ndarray, log: bool
                         ) -> tuple[np.ndarray, Describe]:
    """Eq. 9 over the layers, and row index -> (ops, genotype)."""
    space = layerwise_space(params, ctx)

    def describe(i: int) -> dict[str, Any]:
        genotype = genotype_of(space, archs[i])
        return {"ops": list(genotype.ops), "genotype": genotype.to_dict()}

    return eq9_scores(archs, probs, log=log), describe


def scored_candidates(params: Params, ctx: Any, archs: np.ndarray, probs: np.ndarray
                      ) -> tuple[np.ndarray, Describe]:
    """Eq. 9 scores and candidate fields for the space of ``search.strategy``."""
    log = params.dcnas_cluster.selection == "eq9_log"
    if is_cell_strategy(params.search.strategy):
        return cell_candidates(ctx, archs, probs, log)
    return layerwise_candidates(params, ctx, archs, probs, log)


def representatives(params: Params, describe: Describe, labels: np.ndarray, sizes: np.ndarray,
                    scores: np.ndarray) -> list[dict[str, Any]]:
    """Per cluster: its Eq. 9 pick and (for eq8) the top-m candidates."""
    m = params.dcnas_cluster.top_m if params.dcnas_cluster.selection == "eq8" else 1
    top = top_per_cluster(labels, scores, m)
    out = []
    for cluster, row in enumerate(top):
        members = [int(i) for i in row if i >= 0]
        candidates = [{"index": i, **describe(i), "eq9": float(scores[i])} for i in members]
        out.append({"cluster": cluster, "size": int(sizes[cluster]), **candidates[0], "candidates": candidates})
    return out


def run(params: Params, ctx: Any) -> dict[str, float]:
    cfg = params.dcnas_cluster
    archs, counts, probs = load_samples(ctx)
    features = load_npy(need(ctx.artifacts("dcnas_features") / "features.npy", "dcnas_features"))
    if features.shape[0] != archs.shape[0]:
        raise ParamsError(f"features.npy has {features.shape[0]} rows but archs.npy has {archs.shape[0]}: "
                          "rerun dcnas_features")
    result = _cluster(params, features, counts)
    scores, describe = scored_candidates(params, ctx, archs, probs)
    reps = representatives(params, describe, result.labels, result.sizes, scores)
    save_npy(ctx.out / "clusters.npy", result.labels)
    save_npy(ctx.out / "centers.npy", result.centers)
    write_json(ctx.out / "representatives.json", {"selection": cfg.selection, "clusters": reps})
    summary = {"k": cfg.k, "sizes": result.sizes.tolist(), "inertia": result.inertia,
               "silhouette": result.silhouette, "selection": cfg.selection}
    write_json(ctx.out / "summary.json", summary)
    ctx.log.log_dict({"selection": cfg.selection, "clusters": reps}, "dcnas_cluster/representatives.json")
    _plots(ctx, features, result.labels, [r["index"] for r in reps], counts, params.runtime.seed)
    metrics = {"k": cfg.k, "inertia": result.inertia, "size_min": int(result.sizes.min()),
               "size_max": int(result.sizes.max())}
    if result.silhouette is not None:
        metrics["silhouette"] = result.silhouette
    return metrics


def _plots(ctx: Any, features: np.ndarray, labels: np.ndarray, reps: list[int], counts: np.ndarray,
           seed: int) -> None:
    epochs = None
    summary = ctx.artifacts("dcnas_features") / "summary.json"
    if summary.is_file():
        import json

        epochs = json.loads(summary.read_text()).get("epochs")
    log_figure_file(ctx.log, cluster_scatter(features, labels, reps, seed=seed), ctx.out, "clusters_pca.png")
    log_figure_file(ctx.log, cluster_mean_curves(features, labels, counts, epochs), ctx.out, "cluster_curves.png")
