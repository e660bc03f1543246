"""What a NAS researcher sees in MLflow, on a local sqlite store: the
experiment is a model-training one (the UI opens on the runs table), a stage
run and its nested runs carry the dataset as inputs (name, digest from the
subset manifest, context train/val/test), and a stage opens its store
through the store lock (the lock file sits beside the database)."""
from __future__ import annotations

import json
import shutil
import types
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

import tasks.runner
from tasks.runner import run_stage
from tasks.tracking import EXPERIMENT_KIND_TAG, MODEL_TRAINING, RunLogger
from tests.conftest import REPO


def contexts(client: MlflowClient, run_id: str) -> dict[str, tuple[str, str, dict]]:
    """context -> (dataset name, digest, profile) of a run's dataset inputs."""
    out = {}
    for item in client.get_run(run_id).inputs.dataset_inputs:
        (context,) = [t.value for t in item.tags if t.key == "mlflow.data.context"]
        out[context] = (item.dataset.name, item.dataset.digest, json.loads(item.dataset.profile))
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store for this module's tests (created by the first one to use it:
    creating a store costs seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db"


@pytest.fixture
def project(tmp_path: Path, store: str) -> Path:
    """dvc.yaml, the committed params (tracking to ``store``) and the
    digits data."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy2(REPO / "dvc.yaml", root / "dvc.yaml")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["tracking"]["uri"] = store
    raw["tracking"]["experiment"] = "inputs"
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    (root / "data").symlink_to(REPO / "data")
    return root


def test_stage_runs_carry_the_dataset_and_the_experiment_is_model_training(project, store, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_stage("subset", root=project)
    assert Path(store.removeprefix("sqlite:///") + ".lock").is_file()  # first use went through the lock

    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("inputs")
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING
    (subset_run,) = client.search_runs([experiment.experiment_id])
    manifest = json.loads((project / "artifacts" / "subset" / "manifest.json").read_text())
    found = contexts(client, subset_run.info.run_id)
    assert sorted(found) == ["test", "train", "val"]
    for context, split in (("train", "full_train"), ("val", "val"), ("test", "test")):
        name, digest, profile = found[context]
        assert name == "digits:data"
        assert digest == manifest["splits"][split]["sha256"][:12]
        assert profile["num_rows"] == manifest["splits"][split]["count"]
    assert found["train"][1] != found["val"][1]

    # a later stage logs the inputs before it runs, so its nested runs carry them too
    def fake_run(params, ctx):
        child = ctx.log.child("finalist-0")
        child.end()
        return {"child": 1.0}

    fake = types.SimpleNamespace(run=fake_run, SECTIONS=("evaluate",), __name__="tasks.stages.evaluate")
    monkeypatch.setattr(tasks.runner, "load_stage_module", lambda name, root: fake)
    run_stage("evaluate", root=project)
    (stage_run,) = client.search_runs([experiment.experiment_id], "attributes.run_name = 'stage:evaluate'")
    (child_run,) = client.search_runs([experiment.experiment_id], "attributes.run_name = 'finalist-0'")
    assert child_run.data.tags["mlflow.parentRunId"] == stage_run.info.run_id
    assert contexts(client, stage_run.info.run_id) == found == contexts(client, child_run.info.run_id)


def test_existing_experiment_gets_the_kind_unless_one_is_set(tmp_path, store):
    uri = store
    client = MlflowClient(tracking_uri=uri)
    plain = client.create_experiment("plain")
    chosen = client.create_experiment("chosen", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    for name in ("plain", "chosen"):
        RunLogger.start(uri, name, "run", tmp_path).end()
    assert client.get_experiment(plain).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"  # the user's choice stays


def test_printed_ui_link_opens_the_runs_table(tmp_path):
    """MLflow 3.17's UI lands on the GenAI overview unless the link names the
    model-training workflow (it does not read the experiment's kind tag)."""
    from flows.pipeline import summary_lines

    lines = summary_lines(tmp_path, {"stages": {"subset": "ran"}, "experiment_id": "7", "parent_run_id": "abc"})
    (mlflow_line,) = [line for line in lines if line.startswith("MLflow:")]
    assert "http://127.0.0.1:5000/#/experiments/7?workflowType=machine_learning" in mlflow_line
    assert "http://127.0.0.1:5000/#/experiments/7/runs/abc?workflowType=machine_learning" in mlflow_line


def test_summary_prints_each_stage_wall_time(tmp_path):
    from flows.pipeline import summary_lines

    lines = summary_lines(tmp_path, {"stages": {"subset": "ran", "pretrain": "cached"},
                                     "seconds": {"subset": 3.4, "pretrain": 125.0},
                                     "experiment_id": "7", "parent_run_id": "abc"})
    assert lines[0] == "stages: subset (ran, 3s), pretrain (cached, 2m05s)"
