"""The DC-NAS stages end to end on a tiny digits project: sample ->
features -> cluster -> evaluate -> retrain."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import tasks.dcnas_cluster
import tasks.dcnas_features
import tasks.dcnas_sample
import tasks.evaluate
import tasks.retrain
from nas_core.config import ParamsError
from nas_core.io import load_npy
from tasks.tracking import RunLogger
from tests.tasks.dcnas_project import make_dcnas_project, stage_context, tiny_params

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    params = tiny_params()
    root = make_dcnas_project(tmp_path_factory.mktemp("dcnas") / "project", params)
    parent = RunLogger.start(f"sqlite:///{root}/mlflow.db", "tests", "pipeline", root)
    return root, params, parent


def run_stage(project, module, name, **sections):
    root, params, parent = project
    if sections:
        params = tiny_params(**sections)
    ctx = stage_context(root, params, name, parent)
    metrics = module.run(params, ctx)
    ctx.log.end("FINISHED")
    return metrics, ctx


def test_sample_features_cluster(project):
    root = project[0]
    m, _ = run_stage(project, tasks.dcnas_sample, "dcnas_sample")
    archs = load_npy(root / "artifacts/dcnas_sample/archs.npy")
    counts = load_npy(root / "artifacts/dcnas_sample/counts.npy")
    assert counts.sum() == 400 and m["num_unique"] == len(archs) and archs.shape[1] == 6

    m, _ = run_stage(project, tasks.dcnas_features, "dcnas_features")
    feats = load_npy(root / "artifacts/dcnas_features/features.npy")
    assert feats.shape == (len(archs), 6, 3) and np.isfinite(feats).all()
    assert np.allclose(feats[:, :, 0], 1.0) and feats.std() > 0
    assert m["prefix_sharing_ratio"] > 1.0

    m, _ = run_stage(project, tasks.dcnas_cluster, "dcnas_cluster")
    reps = json.loads((root / "artifacts/dcnas_cluster/representatives.json").read_text())["clusters"]
    labels = load_npy(root / "artifacts/dcnas_cluster/clusters.npy")
    probs = load_npy(root / "artifacts/dcnas_sample/probs.npy")
    assert len(reps) == 3 and sum(r["size"] for r in reps) == 400
    for r in reps:  # Eq. 9: no member of the cluster has a larger sum of probabilities
        members = np.flatnonzero(labels == r["cluster"])
        sums = probs[np.arange(6), archs[members]].sum(1)
        assert r["eq9"] == pytest.approx(sums.max())
    assert (root / "artifacts/dcnas_cluster/clusters_pca.png").stat().st_size > 0
    assert (root / "artifacts/dcnas_cluster/cluster_curves.png").stat().st_size > 0


def test_k_above_unique_architectures_is_a_params_error(project):
    root, params, parent = project
    n = len(load_npy(root / "artifacts/dcnas_sample/archs.npy"))
    with pytest.raises(ParamsError, match=f"more clusters than architectures \\({n}\\)"):
        run_stage(project, tasks.dcnas_cluster, "dcnas_cluster_bad", dcnas_cluster={"k": n + 1})


def test_params_method_eq6(project, tmp_path):
    root = project[0]
    before = load_npy(root / "artifacts/dcnas_features/features.npy")
    m, ctx = run_stage(project, tasks.dcnas_features, "dcnas_features_eq6",
                       dcnas_features={"method": "params"})
    feats = load_npy(ctx.out / "features.npy")
    assert feats.shape == before.shape and not np.allclose(feats, before)


def test_evaluate_and_retrain(project, prefect_server):
    root = project[0]
    m, _ = run_stage(project, tasks.evaluate, "evaluate")
    picks = json.loads((root / "artifacts/evaluate/representatives.json").read_text())["clusters"]
    assert [p["cluster"] for p in picks] == [0, 1, 2]
    assert all(0.0 <= p["val_acc"] <= 1.0 for p in picks)

    m, ctx = run_stage(project, tasks.retrain, "retrain")
    assert {"chosen_test_acc", "baseline_test_acc", "chosen_val_acc"} <= set(m)
    rows = list(csv.DictReader(open(ctx.out / "finalists.csv")))
    assert [r["name"] for r in rows] == ["cluster0", "cluster1", "cluster2", "baseline"]
    chosen = json.loads((ctx.out / "chosen.json").read_text())
    dcnas_val = [float(r["val_acc"]) for r in rows[:3]]
    assert chosen["name"] == f"cluster{int(np.argmax(dcnas_val))}"  # Eq. 10
    assert (ctx.out / "model" / "state_dict.pt").is_file() and chosen["registered_version"] == "1"
    client = ctx.log.client
    children = client.search_runs([ctx.log.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{ctx.log.run_id}'")
    assert sorted(r.info.run_name for r in children) == ["retrain:baseline", "retrain:cluster0",
                                                         "retrain:cluster1", "retrain:cluster2"]
    versions = client.search_model_versions("name = 'nasflow-best'")
    assert [v.run_id for v in versions] == [chosen["mlflow_run_id"]]
