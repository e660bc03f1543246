"""pretrain and search stage functions with FBNet on a tiny digits project:
outputs, MLflow curves, resume-as-no-op, the argmax genotype of the saved
theta, one strategy's files in the persistent output."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nas_core.data import DataError
from nas_core.spaces.layerwise import FBNET_OP_NAMES
from nas_core.train import list_checkpoints, load_checkpoint
from tasks.nas import OWNER_FILE, keep_one_owner
from tasks.stages import pretrain, search
from tests.tasks.stage_project import make_project, stage_context, tiny_params
from tests.train.one_thread import one_thread  # noqa: F401

PARAMS = tiny_params(subset={"fraction": 0.25, "probe_size": 32},
                     strategies={"fbnet": {"epochs": 3, "warmup_epochs": 1, "batch_size": 32}})


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = make_project(tmp_path_factory.mktemp("fbnet_project"), PARAMS)
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
    genotype = json.loads((out / "genotype.json").read_text())
    theta = load_checkpoint(project / "artifacts" / "pretrain" / "checkpoints" / "epoch_003.pt")["supernet"]["theta"]
    assert genotype["ops"] == [FBNET_OP_NAMES[i] for i in theta.argmax(1).tolist()]
    rows = list(csv.reader((out / "layers.csv").open()))
    assert len(rows) == 7 and np.allclose([sum(map(float, r[1:])) for r in rows[1:]], 1.0, atol=1e-4)
    cost = json.loads((out / "cost.json").read_text())
    assert cost["flops"] == metrics["flops"] > 0 and cost["latency_ms"] > 0
    assert (out / "theta_heatmap.png").stat().st_size > 1000 and (out / "tables.png").stat().st_size > 1000


def test_search_before_pretrain_finished_is_a_clear_error(project: Path) -> None:
    params = tiny_params(subset=dict(PARAMS.subset.model_dump()),
                         strategies={"fbnet": {"epochs": 5, "warmup_epochs": 1, "batch_size": 32}})
    with pytest.raises(DataError, match="newest good checkpoint is epoch 3 of 5"):
        search.run(params, stage_context(project, params, "search"))


def test_switching_strategy_empties_the_persistent_output(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "epoch_001.pt").write_bytes(b"state")
    keep_one_owner(tmp_path, "fbnet on layerwise")
    assert (tmp_path / "checkpoints" / "epoch_001.pt").is_file()  # first run: nothing to remove
    keep_one_owner(tmp_path, "fbnet on layerwise")
    assert (tmp_path / "checkpoints" / "epoch_001.pt").read_bytes() == b"state"  # same owner: resumable
    keep_one_owner(tmp_path, "pc_darts on cell")
    assert sorted(p.name for p in tmp_path.iterdir()) == [OWNER_FILE]


def test_the_resume_guard_covers_the_data_not_only_the_params(tmp_path: Path) -> None:
    """Checkpoints made on other data (other split files or normalisation
    statistics in the subset manifest) are not resumed from."""
    from nas_core.spaces import make_space
    from tasks.nas import fingerprint

    params = tiny_params()
    root = make_project(tmp_path / "project", params)
    ctx = stage_context(root, params, "pretrain")
    space = make_space("layerwise", params.spaces.layerwise, (1, 8, 8), 10)
    before = fingerprint(params, ctx, space)
    manifest = root / "artifacts" / "subset" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["normalization"]["mean"] = [m + 0.01 for m in data["normalization"]["mean"]]
    manifest.write_text(json.dumps(data))
    assert fingerprint(params, ctx, space) != before
    ctx.log.end("FINISHED")
