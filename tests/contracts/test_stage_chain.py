"""The whole pipeline after subset — pretrain, search, dcnas_sample,
dcnas_features, dcnas_cluster, evaluate, retrain — through the stages' run
functions, on a tiny digits project, for every search space with a one-shot
strategy (the first registered strategy that searches it). The stage files
are the same for every space and strategy; every other (strategy, space)
pair runs the same chain at the library level in test_strategies.py, and
tests/foundation/test_pipeline.py runs PC-DARTS's whole DAG through Prefect
and DVC."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

import tasks.stages.dcnas_cluster
import tasks.stages.dcnas_features
import tasks.stages.dcnas_sample
import tasks.stages.evaluate
import tasks.stages.pretrain
import tasks.stages.retrain
import tasks.stages.search
from nas_core.io import load_npy
from nas_core.spaces import make_space
from nas_core.spaces.export import load_network
from nas_core.strategies import STRATEGIES, OneShotStrategy
from nas_core.train.checkpoint import list_checkpoints
from nas_core.train.loop import evaluate, make_loader
from tasks.nas import load_tables
from tasks.tracking import RunLogger
from tests.tasks.stage_project import make_project, run_stage, tiny_params
from tests.train.one_thread import one_thread  # noqa: F401  (tiny models: one torch thread)

pytestmark = pytest.mark.slow

ONE_SHOT = [name for name in STRATEGIES.names() if issubclass(STRATEGIES.get(name), OneShotStrategy)]
PAIRS = sorted({space: next(n for n in ONE_SHOT if space in STRATEGIES.get(n).spaces)
                for name in ONE_SHOT for space in STRATEGIES.get(name).spaces}.items(), key=lambda p: p[0])
PAIRS = [(strategy, space) for space, strategy in PAIRS]
STAGES = (("pretrain", tasks.stages.pretrain), ("search", tasks.stages.search),
          ("dcnas_sample", tasks.stages.dcnas_sample), ("dcnas_features", tasks.stages.dcnas_features),
          ("dcnas_cluster", tasks.stages.dcnas_cluster), ("evaluate", tasks.stages.evaluate),
          ("retrain", tasks.stages.retrain))


@pytest.fixture(scope="module", params=PAIRS, ids=[f"{n}-{s}" for n, s in PAIRS])
def chain(request, tmp_path_factory):
    """Every stage run once for one pair; (root, params, {stage: (metrics, ctx)})."""
    name, space = request.param
    params = tiny_params(search={"strategy": name, "space": space})
    root = make_project(tmp_path_factory.mktemp(f"chain-{name}") / "project", params)
    parent = RunLogger.start(f"sqlite:///{root}/mlflow.db", "tests", "pipeline", root)
    torch.manual_seed(0)
    done = {stage: run_stage(root, params, module, stage, parent) for stage, module in STAGES}
    return root, params, done


def artifact(root, stage, name):
    return root / "artifacts" / stage / name


def test_pretrain_checkpoints_and_search_genotype(chain):
    root, params, done = chain
    strategy = getattr(params.strategies, params.search.strategy)
    epochs = [e for e, _ in list_checkpoints(artifact(root, "pretrain", "checkpoints"))]
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) >= strategy.epochs
    assert done["pretrain"][0]["epochs"] == len(epochs)
    space = make_space(params.search.space, getattr(params.spaces, params.search.space), (1, 8, 8), 10)
    genotype = space.genotype_from_dict(json.loads(artifact(root, "search", "genotype.json").read_text()))
    assert artifact(root, "search", "genotype.png").read_bytes()[:4] == b"\x89PNG"
    tables = load_tables(artifact(root, "search", "tables.npz"), "search")
    assert np.isfinite(space.score(space.encode(genotype)[None], tables)).all()
    assert done["search"][0]["params"] > 0 and done["search"][0]["checkpoint_epoch"] == len(epochs)


def test_dcnas_sample_features_and_eq9_representatives(chain):
    root, params, done = chain
    archs = load_npy(artifact(root, "dcnas_sample", "archs.npy"))
    counts = load_npy(artifact(root, "dcnas_sample", "counts.npy"))
    assert counts.sum() == params.dcnas_sample.num_samples and len(archs) == done["dcnas_sample"][0]["num_unique"]
    features = load_npy(artifact(root, "dcnas_features", "features.npy"))
    summary = json.loads(artifact(root, "dcnas_features", "summary.json").read_text())
    assert features.shape[:1] == archs.shape[:1] and features.shape[2] == len(summary["epochs"]) >= 2
    np.testing.assert_allclose(features[:, :, 0], 1.0, atol=1e-6)
    space = make_space(params.search.space, getattr(params.spaces, params.search.space), (1, 8, 8), 10)
    scores = space.score(archs, load_tables(artifact(root, "dcnas_sample", "tables.npz"), "dcnas_sample"))
    labels = load_npy(artifact(root, "dcnas_cluster", "clusters.npy"))
    reps = json.loads(artifact(root, "dcnas_cluster", "representatives.json").read_text())["clusters"]
    assert [r["cluster"] for r in reps] == list(range(params.dcnas_cluster.k))
    for r in reps:  # Eq. 9: no member of the cluster scores higher
        assert r["eq9"] == pytest.approx(scores[labels == r["cluster"]].max())
        assert space.genotype_from_dict(r["genotype"]) == space.decode(archs[r["index"]])


def test_retrain_exports_and_registers_n_star_against_the_search_baseline(chain):
    root, params, done = chain
    metrics, ctx = done["retrain"]
    rows = list(csv.DictReader(artifact(root, "retrain", "finalists.csv").open()))
    assert [r["name"] for r in rows] == [f"cluster{k}" for k in range(params.dcnas_cluster.k)] + ["baseline"]
    assert all(int(r["flops"]) > 0 and int(r["params"]) > 0 and float(r["latency_ms"]) > 0 for r in rows)
    chosen = json.loads(artifact(root, "retrain", "chosen.json").read_text())
    dcnas_val = [float(r["val_acc"]) for r in rows[:-1]]
    assert chosen["name"] == f"cluster{int(np.argmax(dcnas_val))}"  # Eq. 10
    assert chosen["test_acc_vs_baseline"] == pytest.approx(chosen["test_acc"] - chosen["baseline"]["test_acc"])
    net, space, genotype = load_network(artifact(root, "retrain", "model"))
    assert genotype.to_dict() == chosen["genotype"]
    test = make_loader(ctx.splits()["test"], 256, shuffle=False)
    assert evaluate(net, test, torch.device("cpu"))["acc"] == pytest.approx(chosen["test_acc"])
    versions = ctx.log.client.search_model_versions(f"name = '{params.tracking.registered_model}'")
    assert [v.run_id for v in versions] == [chosen["mlflow_run_id"]]
