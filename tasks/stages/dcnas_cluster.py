"""dcnas_cluster: Eq. 5 k-means over the features, then the representative
of each cluster (nas_core.dcnas.cluster / select):

- ``selection: eq9``: the member with the largest Σ_l a(N^l) (Eq. 9, the
  space's ``score`` on the tables dcnas_sample drew from);
- ``eq9_log``: the largest Σ_l log a(N^l);
- ``eq8``: the ``top_m`` members by Eq. 9 become candidates; the evaluate
  stage trains them early-stopped on D~ and keeps the best (Eq. 8).

Each candidate has ``index`` (row of archs.npy), ``label`` (the space's
one-line description), ``genotype`` (the dict evaluate/retrain train) and
``eq9``. Outputs clusters.npy (label per row of archs.npy), centers.npy,
representatives.json, summary.json and two plots."""
from __future__ import annotations

import json
from typing import Any, Callable

import numpy as np

from nas_core.config import Params, ParamsError
from nas_core.dcnas.cluster import cluster_features
from nas_core.dcnas.plots import cluster_mean_curves, cluster_scatter
from nas_core.dcnas.select import top_per_cluster
from nas_core.io import load_npy, save_npy, write_json
from nas_core.spaces import SearchSpace
from tasks.context import StageContext
from tasks.nas import TABLES, build_space, load_tables, need
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


def describer(space: SearchSpace, archs: np.ndarray) -> Describe:
    def describe(i: int) -> dict[str, Any]:
        genotype = space.decode(archs[i])
        return {"label": space.label(genotype), "genotype": genotype.to_dict()}

    return describe


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


def run(params: Params, ctx: StageContext) -> dict[str, float]:
    cfg = params.dcnas_cluster
    sample = ctx.artifacts("dcnas_sample")
    archs, counts = (load_npy(need(sample / name, "dcnas_sample")) for name in ("archs.npy", "counts.npy"))
    tables = load_tables(sample / TABLES, "dcnas_sample")
    space = build_space(params, ctx, "none")
    features = load_npy(need(ctx.artifacts("dcnas_features") / "features.npy", "dcnas_features"))
    if features.shape[0] != archs.shape[0]:
        raise ParamsError(f"features.npy has {features.shape[0]} rows but archs.npy has {archs.shape[0]}: "
                          "rerun dcnas_features")
    result = _cluster(params, features, counts)
    scores = space.score(archs, tables, log=cfg.selection == "eq9_log")
    reps = representatives(params, describer(space, archs), result.labels, result.sizes, scores)
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


def _plots(ctx: StageContext, features: np.ndarray, labels: np.ndarray, reps: list[int], counts: np.ndarray,
           seed: int) -> None:
    epochs = None
    summary = ctx.artifacts("dcnas_features") / "summary.json"
    if summary.is_file():
        epochs = json.loads(summary.read_text()).get("epochs")
    log_figure_file(ctx.log, cluster_scatter(features, labels, reps, seed=seed), ctx.out, "clusters_pca.png")
    log_figure_file(ctx.log, cluster_mean_curves(features, labels, counts, epochs), ctx.out, "cluster_curves.png")
