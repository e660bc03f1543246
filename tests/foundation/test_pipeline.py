"""The nas-pipeline flow against real DVC (temporary git repo), a real
Prefect API (test harness) and a real MLflow sqlite store."""
from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from flows.pipeline import nas_pipeline
from tests.conftest import sh

pytestmark = pytest.mark.slow


def client_for(project):
    return MlflowClient(tracking_uri=f"sqlite:///{project}/mlflow.db")


def nested_runs(client, result):
    return client.search_runs([result["experiment_id"]],
                              f"tags.mlflow.parentRunId = '{result['parent_run_id']}'")


def test_pipeline_runs_dag_then_caches_then_reruns_changed_stage(project, prefect_server):
    first = nas_pipeline(root=str(project), stages=["subset"])
    assert first["stages"] == {"subset": "ran"}
    assert json.loads((project / "metrics" / "subset.json").read_text())["probe_count"] == 256

    client = client_for(project)
    parent = client.get_run(first["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["prefect.flow_run_id"]
    assert parent.data.tags["stage.subset"] == "ran" and parent.data.tags["dvc.lock.subset"] != "none"
    (stage_run,) = nested_runs(client, first)
    assert stage_run.data.tags["nasflow.stage"] == "subset"
    assert stage_run.data.params["subset.fraction"] == "0.5"
    assert stage_run.data.metrics["subset_count"] > 0
    assert stage_run.data.tags["prefect.flow_run_id"] == parent.data.tags["prefect.flow_run_id"]

    second = nas_pipeline(root=str(project), stages=["subset"])
    assert second["stages"] == {"subset": "cached"}
    assert nested_runs(client, second) == []
    status = sh("dvc", "status", "subset", cwd=project).stdout
    assert "up to date" in status

    third = nas_pipeline(root=str(project), stages=["subset"], overrides={"subset.fraction": 0.4})
    assert third["stages"] == {"subset": "ran"}
    assert "fraction: 0.4" in (project / "params.yaml").read_text()


def test_bad_override_leaves_params_untouched(project, prefect_server):
    before = (project / "params.yaml").read_text()
    with pytest.raises(Exception, match="subset.fraction"):
        nas_pipeline(root=str(project), stages=["subset"], overrides={"subset.fraction": 2.0})
    assert (project / "params.yaml").read_text() == before


def test_installed_nasflow_runs_without_the_virtualenv_on_path(project):
    """`.venv/bin/nasflow pipeline` from a shell whose PATH lacks the
    virtualenv (cron, a worker started by path): dvc, and the `nasflow stage`
    commands dvc runs, are found beside the interpreter."""
    import sys
    from pathlib import Path

    nasflow = Path(sys.executable).parent / "nasflow"
    proc = sh(str(nasflow), "pipeline", "--stages", "subset", cwd=project, check=False,
              env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (project / "metrics" / "subset.json").is_file()
    assert "up to date" in sh("dvc", "status", "subset", cwd=project).stdout


def test_tools_env_puts_the_interpreters_scripts_first_once():
    import os
    import sys
    from pathlib import Path

    from flows.tools import tools_env

    scripts = str(Path(sys.executable).parent)
    env = tools_env({"PATH": os.pathsep.join(["/usr/bin", scripts, "/bin"]), "OTHER": "kept"})
    assert env["PATH"].split(os.pathsep) == [scripts, "/usr/bin", "/bin"] and env["OTHER"] == "kept"


TINY_CELL_RUN = {"search.strategy": "pc_darts", "subset.fraction": 0.1, "subset.probe_size": 16,
                 "strategies.pc_darts.epochs": 2, "strategies.pc_darts.cells": 3,
                 "strategies.pc_darts.init_channels": 4, "strategies.pc_darts.pc_k": 2,
                 "strategies.pc_darts.warmup_epochs": 0, "spaces.cell.final_cells": 3,
                 "spaces.cell.final_channels": 4, "dcnas_sample.num_samples": 20, "dcnas_cluster.k": 2,
                 "dcnas_cluster.silhouette_sample": 10, "evaluate.epochs": 1, "retrain.epochs": 1}


def test_another_strategy_runs_through_dvc_and_reruns_only_what_its_space_reads(project, prefect_server):
    """`nasflow pipeline --set search.strategy=pc_darts`: the space follows
    the strategy (cell) and its supernet trains through DVC (search and the
    DC-NAS chain on the cell space: tests/contracts/test_stage_chain.py). A
    change to the layer-wise space's code leaves this run up to date, a
    change to the cell space's code reruns it."""
    result = nas_pipeline(root=str(project), overrides=TINY_CELL_RUN, stages=["pretrain"])
    assert result["stages"] == dict.fromkeys(["subset", "pretrain"], "ran")
    assert "space: cell" in (project / "params.yaml").read_text()
    summary = json.loads((project / "artifacts" / "pretrain" / "summary.json").read_text())
    assert (summary["strategy"], summary["space"], summary["epochs"]) == ("pc_darts", "cell", 2)
    status = ("dvc", "status", "--with-deps", "pretrain")
    assert "up to date" in sh(*status, cwd=project).stdout

    with open(project / "nas_core" / "spaces" / "layerwise" / "space.py", "a") as f:
        f.write("\n# an edit to another space\n")
    assert "up to date" in sh(*status, cwd=project).stdout
    with open(project / "nas_core" / "spaces" / "cell" / "space.py", "a") as f:
        f.write("\n# an edit to this space\n")
    changed = sh(*status, cwd=project).stdout.split()
    assert "pretrain:" in changed and "subset:" not in changed
