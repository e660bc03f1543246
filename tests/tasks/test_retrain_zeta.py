"""The retrain stage reports the gradient confusion zeta of every trained
final network (stacnas.md §3.4.2, appendix C): a finite ``<name>_zeta``
per finalist in the stage's metrics, in finalists.csv, chosen.json and the
finalist's run; measured on the main logits, so DARTS's auxiliary head
changes neither the gradients nor the parameter count."""
from __future__ import annotations

import csv
import dataclasses
import json
import math

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from nas_core.spaces import make_space
from nas_core.spaces.export import load_network
from tasks.stages import retrain
from tests.tasks.stage_project import make_project, run_stage, tiny_params
from tests.train.one_thread import one_thread  # noqa: F401

CELL = {"final_cells": 3, "final_channels": 4, "auxiliary_weight": 0.4}  # with DARTS's auxiliary head


@pytest.fixture(scope="module")
def retrained(tmp_path_factory):
    params = tiny_params(search={"strategy": "stacnas", "space": "cell"}, spaces={"cell": CELL},
                         data={"holdout_test_fraction": 0.75},  # D: ~360 images, one epoch in seconds
                         retrain={"epochs": 1, "include_baseline": False})
    root = make_project(tmp_path_factory.mktemp("zeta") / "project", params)
    space = make_space("cell", params.spaces.cell, (1, 8, 8), 10)
    rng = np.random.default_rng(4)
    picks = [{"cluster": c, "genotype": space.random(rng).to_dict(), "candidates": [{}]} for c in (0, 1)]
    out = root / "artifacts" / "evaluate"
    out.mkdir(parents=True)
    (out / "representatives.json").write_text(json.dumps({"evaluator": "train", "clusters": picks}))
    metrics, ctx = run_stage(root, params, retrain, "retrain")
    return root, params, metrics, ctx


def test_every_finalist_reports_a_finite_zeta(retrained):
    root, params, metrics, ctx = retrained
    out = root / "artifacts" / "retrain"
    rows = list(csv.DictReader((out / "finalists.csv").open()))
    assert [r["name"] for r in rows] == ["cluster0", "cluster1"]
    for row in rows:
        assert math.isfinite(metrics[f"{row['name']}_zeta"])
        assert float(row["zeta"]) == pytest.approx(metrics[f"{row['name']}_zeta"])
    assert metrics["cluster0_zeta"] != metrics["cluster1_zeta"]  # measured per network
    chosen = json.loads((out / "chosen.json").read_text())
    assert chosen["zeta"] == metrics["chosen_zeta"] == metrics[f"{chosen['name']}_zeta"]
    client = MlflowClient(tracking_uri=ctx.log.client.tracking_uri)
    assert client.get_run(chosen["mlflow_run_id"]).data.metrics["zeta"] == pytest.approx(chosen["zeta"])


def test_zeta_leaves_the_auxiliary_head_out(retrained):
    """The exported N* (auxiliary head included) gives the stage's zeta; the
    same weights in a network built without the head give the same zeta."""
    root, params, metrics, ctx = retrained
    network, space, genotype = load_network(root / "artifacts" / "retrain" / "model")
    assert hasattr(network, "auxiliary")
    job = retrain.job_for(params, ctx, space, {"name": "n", "genotype": genotype.to_dict()}, ctx.log)
    state = network.state_dict()
    assert retrain.final_confusion(job, state) == pytest.approx(metrics["chosen_zeta"], rel=1e-9)
    bare = dataclasses.replace(space, auxiliary_weight=0.0)
    without = dataclasses.replace(job, train=dataclasses.replace(job.train, space=bare))
    trunk = {k: v for k, v in state.items() if not k.startswith("auxiliary.")}
    assert retrain.final_confusion(without, trunk) == pytest.approx(metrics["chosen_zeta"], rel=1e-6)
