"""A real `mlflow server` (conftest.py's ``mlflow_server``: sqlite backend,
artifacts served by the server from a directory in tmp, so clients upload
over HTTP): the pipeline logs over HTTP (parent run with a description
naming strategy, space and dataset, nested stage runs with the dataset as
their inputs, params, metrics; the DC-NAS stages' genotype artifact and
registered model) into a model-training experiment; with the server down a
stage exits 75 with a clear message and leaves no output behind."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from service_procs import HOST, copy_project, free_port

from flows.pipeline import nas_pipeline
from tests.conftest import sh

pytestmark = pytest.mark.slow
EXIT_TEMPFAIL = 75


def test_pipeline_logs_parent_and_stage_runs_over_http(template_project, tmp_path, mlflow_server, prefect_server,
                                                       monkeypatch):
    project = copy_project(template_project, tmp_path / "project")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    result = nas_pipeline(root=str(project), stages=["subset"])
    assert result["stages"] == {"subset": "ran"}
    assert not (project / "mlflow.db").exists()  # nothing went to the local store

    client = MlflowClient(tracking_uri=mlflow_server)
    (experiment,) = [e for e in client.search_experiments() if e.name == "nasflow"]
    parent = client.get_run(result["parent_run_id"])
    assert parent.info.experiment_id == experiment.experiment_id
    assert parent.info.status == "FINISHED" and parent.data.tags["nasflow.kind"] == "pipeline"
    assert parent.data.params["subset.fraction"] == "0.5"
    # each stage's wall time, on the parent run and in the summary `make run` prints
    assert parent.data.metrics["stage_seconds.subset"] == pytest.approx(result["seconds"]["subset"])
    assert 0 < result["seconds"]["subset"] < 600
    (stage,) = client.search_runs([experiment.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert stage.data.tags["nasflow.stage"] == "subset" and stage.info.status == "FINISHED"
    assert stage.data.params["subset.probe_size"] == "256"
    metrics = json.loads((project / "metrics" / "subset.json").read_text())
    assert stage.data.metrics["probe_count"] == metrics["probe_count"] == 256

    # what the MLflow UI needs: a model-training experiment (runs table first),
    # the dataset on the stage run, a parent description a reader can scan
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    manifest = json.loads((project / "artifacts" / "subset" / "manifest.json").read_text())
    inputs = {tag.value: item.dataset for item in client.get_run(stage.info.run_id).inputs.dataset_inputs
              for tag in item.tags if tag.key == "mlflow.data.context"}
    assert sorted(inputs) == ["test", "train", "val"]
    assert {d.name for d in inputs.values()} == {"digits:data"}
    assert inputs["train"].digest == manifest["splits"]["full_train"]["sha256"][:12]
    assert inputs["test"].digest == manifest["splits"]["test"]["sha256"][:12]
    parent_inputs = {tag.value: item.dataset for item in client.get_run(parent.info.run_id).inputs.dataset_inputs
                     for tag in item.tags if tag.key == "mlflow.data.context"}
    assert parent_inputs == inputs  # the runs table's Dataset column on the pipeline's row
    description = parent.data.tags["mlflow.note.content"]
    assert "strategy fbnet" in description and "search space layerwise" in description
    assert "dataset digits:data" in description


def test_stage_exits_75_and_writes_nothing_when_server_is_down(template_project, tmp_path):
    project = copy_project(template_project, tmp_path / "project")
    params = (project / "params.yaml").read_text().replace("tracking:\n", "tracking:\n  retries: 1\n", 1)
    (project / "params.down.yaml").write_text(params)
    down = f"http://{HOST}:{free_port()}"
    proc = sh("nasflow", "stage", "subset", "--params", "params.down.yaml", cwd=project, check=False,
              env={"MLFLOW_TRACKING_URI": down})
    assert proc.returncode == EXIT_TEMPFAIL, proc.stderr
    assert "MLflow server not reachable" in proc.stderr and down in proc.stderr
    assert not (project / "artifacts" / "subset").exists()
    assert not (project / "metrics" / "subset.json").exists()
    assert not list(project.glob("artifacts/*subset*"))  # no staging directory left either


def test_dcnas_stages_log_genotype_and_register_the_model_over_http(mlflow_server, tmp_path, prefect_server):
    import tasks.stages.dcnas_cluster
    import tasks.stages.dcnas_features
    import tasks.stages.dcnas_sample
    import tasks.stages.evaluate
    import tasks.stages.pretrain
    import tasks.stages.retrain
    import tasks.stages.search
    from tasks.tracking import RunLogger
    from tests.tasks.stage_project import make_project, stage_context, tiny_params

    params = tiny_params()
    root = make_project(tmp_path / "project", params)
    parent = RunLogger.start(mlflow_server, params.tracking.experiment, "pipeline", root)
    stages = tasks.stages
    for module in (stages.pretrain, stages.search, stages.dcnas_sample, stages.dcnas_features, stages.dcnas_cluster,
                   stages.evaluate, stages.retrain):
        ctx = stage_context(root, params, module.__name__.split(".")[-1], parent)
        module.run(params, ctx)
        ctx.log.end("FINISHED")
    parent.end("FINISHED")

    client = MlflowClient(tracking_uri=mlflow_server)
    chosen = json.loads((root / "artifacts" / "retrain" / "chosen.json").read_text())
    (version,) = client.search_model_versions(f"name = '{params.tracking.registered_model}'")
    assert version.run_id == chosen["mlflow_run_id"]
    # artifacts went to the server over HTTP, not to a path of this machine
    assert client.get_run(chosen["mlflow_run_id"]).info.artifact_uri.startswith("mlflow-artifacts:")
    names = {a.path for a in client.list_artifacts(chosen["mlflow_run_id"])}
    assert {"genotype.json", "model"} <= names
    path = client.download_artifacts(chosen["mlflow_run_id"], "genotype.json", str(tmp_path))
    assert json.loads(Path(path).read_text())["ops"] == chosen["genotype"]["ops"]
    stages = client.search_runs([parent.experiment_id], f"tags.mlflow.parentRunId = '{parent.run_id}'")
    assert {r.info.run_name for r in stages} == {"stage:pretrain", "stage:search", "stage:dcnas_sample",
                                                 "stage:dcnas_features", "stage:dcnas_cluster", "stage:evaluate",
                                                 "stage:retrain"}
    # each feature partition's throughput, logged live from its task after every checkpoint epoch
    (features_run,) = [r for r in stages if r.info.run_name == "stage:dcnas_features"]
    summary = json.loads((root / "artifacts" / "dcnas_features" / "summary.json").read_text())
    assert summary["partitions"] == params.runtime.max_workers == 2
    for part in range(summary["partitions"]):
        history = client.get_metric_history(features_run.info.run_id, f"part{part:03d}_archs_per_s")
        assert sorted(m.step for m in history) == list(range(1, len(summary["epochs"]) + 1))
