"""A fresh clone that ran both pipelines (the main chain, then the study)
reports every dvc.yaml up to date: no stage's deps change by running, and
no committed output stands in for one a pipeline did not make."""
from __future__ import annotations

import shutil

import pytest
import yaml

from tests.ablation.test_stages import SPACE as STUDY_SPACE
from tests.ablation.test_stages import TINY as STUDY
from tests.conftest import REPO, make_project, sh
from tests.tasks.stage_project import TINY, tiny_strategies

pytestmark = pytest.mark.slow


def tiny_params_file(project) -> None:
    raw = yaml.safe_load((project / "params.yaml").read_text())
    for section, values in TINY.items():
        for key, value in values.items():
            if isinstance(value, dict):
                raw[section].setdefault(key, {}).update(value)
            else:
                raw[section][key] = value
    raw["strategies"] = tiny_strategies()
    raw["tracking"].update(uri=f"sqlite:///{project}/mlflow.db", experiment="fresh-clone")
    raw["ablation"].update(STUDY)
    raw["spaces"]["channel_ratio"].update(STUDY_SPACE)
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def test_both_pipelines_leave_every_dvc_yaml_up_to_date(tmp_path):
    project = make_project(tmp_path / "clone")
    (project / "ablation").mkdir()
    shutil.copy(REPO / "ablation" / "dvc.yaml", project / "ablation" / "dvc.yaml")
    tiny_params_file(project)
    sh("git", "add", "-A", cwd=project)
    sh("git", "commit", "-qm", "tiny", cwd=project)

    main = sh("dvc", "repro", cwd=project, check=False)
    assert main.returncode == 0, main.stdout[-3000:] + main.stderr[-3000:]
    study = sh("dvc", "repro", "ablation/dvc.yaml", cwd=project, check=False)
    assert study.returncode == 0, study.stdout[-3000:] + study.stderr[-3000:]

    status = sh("dvc", "status", cwd=project)
    assert "Data and pipelines are up to date" in status.stdout, status.stdout
    for pipeline in ("dvc.yaml", "ablation/dvc.yaml"):
        assert "up to date" in sh("dvc", "status", pipeline, cwd=project).stdout
