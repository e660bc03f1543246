"""pretrain and search (fbnet) stage functions on a tiny digits project:
outputs, MLflow curves, resume-as-no-op, argmax genotype of the saved theta."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nas_core.data import DataError, load_source, make_splits, write_splits
from nas_core.spaces import Genotype
from nas_core.train import list_checkpoints, load_checkpoint
from tasks import pretrain, search
from tests.conftest import REPO
from tests.tasks.dcnas_project import stage_context, tiny_params
from tests.train.one_thread import one_thread  # noqa: F401

PARAMS = tiny_params(subset={"fraction": 0.25, "probe_size": 32},
                     pretrain={"epochs": 3, "warmup_epochs": 1, "batch_size": 32, "latency_repeats": 1})


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fbnet_project")
    (root / "data").symlink_to(REPO / "data")
    source = load_source(PARAMS.data, root)
    splits = make_splits(source.train_targets, source.test_targets, PARAMS.data, PARAMS.subset, PARAMS.runtime.seed)
    write_splits(splits, source, root / "artifacts" / "subset", PARAMS.runtime.seed)
    torch.manual_seed(0)
    ctx = stage_context(root, PARAMS, "pretrain")
    metrics = pretrain.run(PARAMS, ctx)
    (root / "pretrain_metrics.json").write_text(json.dumps(metrics))
    (root / "pretrain_run_id").write_text(ctx.log.run_id)
    return root


def test_pretrain_writes_checkpoints_latency_history_and_curves(project: Path) -> None:
    out = project / "artifacts" / "pretrain"
    assert [e for e, _ in list_checkpoints(out / "checkpoints")] == [1, 2, 3]
    table = json.loads((out / "latency.json").read_text())
    assert table["device"] == "cpu" and len(table["ms"]) == 6 and len(table["ms"][0]) == 9
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and "theta_entropy" in rows[0]
    assert np.load(out / "theta_history.npy").shape == (3, 6, 9)
    metrics = json.loads((project / "pretrain_metrics.json").read_text())
    assert metrics["epochs"] == 3 and 0 <= metrics["acc"] <= 1
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    run_id = (project / "pretrain_run_id").read_text()
    for key in ("loss", "acc", "temperature", "theta_entropy", "expected_latency_ms"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == [1, 2, 3], key


def test_rerun_of_a_finished_pretrain_trains_nothing(project: Path) -> None:
    out = project / "artifacts" / "pretrain"
    before = {p.name: p.stat().st_mtime_ns for _, p in list_checkpoints(out / "checkpoints")}
    latency = (out / "latency.json").read_text()
    pretrain.run(PARAMS, stage_context(project, PARAMS, "pretrain"))
    assert {p.name: p.stat().st_mtime_ns for _, p in list_checkpoints(out / "checkpoints")} == before
    assert (out / "latency.json").read_text() == latency


def test_fbnet_search_derives_the_argmax_of_the_saved_theta(project: Path) -> None:
    metrics = search.run(PARAMS, stage_context(project, PARAMS, "search"))
    out = project / "artifacts" / "search"
    genotype = Genotype.from_json((out / "genotype.json").read_text())
    theta = load_checkpoint(project / "artifacts" / "pretrain" / "checkpoints" / "epoch_003.pt")["model"]["theta"]
    assert genotype.ops == tuple(pretrain_op_names()[i] for i in theta.argmax(1).tolist())
    rows = list(csv.reader((out / "probabilities.csv").open()))
    assert rows[0] == ["layer", *pretrain_op_names()] and len(rows) == 7
    assert np.allclose([sum(map(float, r[1:])) for r in rows[1:]], 1.0, atol=1e-4)
    cost = json.loads((out / "cost.json").read_text())
    assert cost["flops"] == metrics["flops"] > 0 and cost["latency_ms"] > 0 and cost["checkpoint_epoch"] == 3
    assert (out / "theta_heatmap.png").stat().st_size > 1000


def test_search_before_pretrain_finished_is_a_clear_error(tmp_path: Path, project: Path) -> None:
    params = tiny_params(subset=dict(PARAMS.subset.model_dump()), pretrain={"epochs": 5, "warmup_epochs": 1})
    with pytest.raises(DataError, match="newest good checkpoint is epoch 3 of pretrain.epochs = 5"):
        search.run(params, stage_context(project, params, "search"))


def pretrain_op_names() -> list[str]:
    from nas_core.spaces import FBNET_OP_NAMES

    return list(FBNET_OP_NAMES)
