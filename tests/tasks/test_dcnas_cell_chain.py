"""DC-NAS on the DARTS cell space: subset -> search (darts) -> dcnas_sample
-> dcnas_features -> dcnas_cluster -> evaluate -> retrain, through the
stages' run functions, on a tiny digits project."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

import tasks.dcnas_cluster
import tasks.dcnas_features
import tasks.dcnas_sample
import tasks.evaluate
import tasks.retrain
import tasks.search
from tasks.dcnas_cell import cell_ops
from nas_core.dcnas.cell_paths import ROW_WIDTH, cell_arch_scores
from nas_core.io import load_npy
from nas_core.spaces.cell import CellGenotype
from nas_core.supernet.cell import load_exported
from nas_core.train.loop import evaluate, make_loader
from tasks.tracking import RunLogger
from tests.tasks.dcnas_project import make_dcnas_project, stage_context, tiny_params
from tests.train.one_thread import one_thread  # noqa: F401  (tiny models: one torch thread)

pytestmark = pytest.mark.slow

CELL = {"cells": 3, "init_channels": 4, "epochs": 2, "batch_size": 64, "final_cells": 3, "final_channels": 4}
PARAMS = {"subset": {"fraction": 0.1, "probe_size": 16}, "search": {"strategy": "darts", "cell": CELL},
          "dcnas_sample": {"num_samples": 12}, "dcnas_cluster": {"k": 2, "silhouette_sample": 10}}


@pytest.fixture(scope="module")
def chain(tmp_path_factory, prefect_server, one_thread):
    """Every stage of the chain run once; {stage: (metrics, ctx)}."""
    params = tiny_params(**PARAMS)
    root = make_dcnas_project(tmp_path_factory.mktemp("dcnas_cell") / "project", params)
    parent = RunLogger.start(f"sqlite:///{root}/mlflow.db", "tests", "pipeline", root)
    done = {}
    for name, module in (("search", tasks.search), ("dcnas_sample", tasks.dcnas_sample),
                         ("dcnas_features", tasks.dcnas_features), ("dcnas_cluster", tasks.dcnas_cluster),
                         ("evaluate", tasks.evaluate), ("retrain", tasks.retrain)):
        ctx = stage_context(root, params, name, parent)
        done[name] = (module.run(params, ctx), ctx)
        ctx.log.end("FINISHED")
    return root, params, done


def artifact(root, stage, name):
    return root / "artifacts" / stage / name


def test_sample_features_and_clusters_have_cell_shapes(chain):
    root, _, done = chain
    archs = load_npy(artifact(root, "dcnas_sample", "archs.npy"))
    counts = load_npy(artifact(root, "dcnas_sample", "counts.npy"))
    probs = load_npy(artifact(root, "dcnas_sample", "probs.npy"))
    edges = load_npy(artifact(root, "dcnas_sample", "edge_weights.npy"))
    assert archs.shape == (done["dcnas_sample"][0]["num_unique"], ROW_WIDTH) and counts.sum() == 12
    assert probs.shape == (2, 14, 8) and edges.shape == (2, 14)

    features = load_npy(artifact(root, "dcnas_features", "features.npy"))
    assert features.shape == (len(archs), 3, 2)  # (archs, cells, search epochs)
    np.testing.assert_allclose(features[:, :, 0], 1.0, atol=1e-6)

    labels = load_npy(artifact(root, "dcnas_cluster", "clusters.npy"))
    reps = json.loads(artifact(root, "dcnas_cluster", "representatives.json").read_text())["clusters"]
    scores = cell_arch_scores(archs, {"normal": probs[0], "reduce": probs[1]},
                              {"normal": edges[0], "reduce": edges[1]})
    assert [r["cluster"] for r in reps] == [0, 1]
    for r in reps:  # Eq. 9 on cells: the member with the largest sum of edge x op probabilities
        assert r["eq9"] == pytest.approx(scores[labels == r["cluster"]].max())
        assert len(CellGenotype.from_dict(r["genotype"]).normal) == 8 and len(r["ops"]) == 16


def test_retrain_chooses_a_cell_network_against_the_darts_baseline(chain):
    root, params, done = chain
    metrics, ctx = done["retrain"]
    rows = list(csv.DictReader(artifact(root, "retrain", "finalists.csv").open()))
    assert [r["name"] for r in rows] == ["cluster0", "cluster1", "baseline"]
    assert all(int(r["flops"]) > 0 and int(r["params"]) > 0 and float(r["latency_ms"]) > 0 for r in rows)
    chosen = json.loads(artifact(root, "retrain", "chosen.json").read_text())
    genotype = CellGenotype.from_dict(chosen["genotype"])
    searched = CellGenotype.from_json(artifact(root, "search", "genotype.json").read_text())
    assert rows[-1]["ops"] == " | ".join(cell_ops(searched))  # baseline = DARTS's genotype
    assert {"chosen_test_acc", "baseline_test_acc", "test_acc_vs_baseline"} <= set(metrics)
    assert chosen["test_acc_vs_baseline"] == pytest.approx(chosen["test_acc"] - chosen["baseline"]["test_acc"])

    net = load_exported(artifact(root, "retrain", "model"))
    assert net.genotype == genotype and len(net.cells) == 3
    test = make_loader(ctx.splits()["test"], 256, shuffle=False)
    assert evaluate(net, test, torch.device("cpu"))["acc"] == pytest.approx(chosen["test_acc"])
    versions = ctx.log.client.search_model_versions(f"name = '{params.tracking.registered_model}'")
    assert [v.run_id for v in versions] == [chosen["mlflow_run_id"]]
