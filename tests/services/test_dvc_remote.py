"""`dvc push` to the configured remote (the committed .dvc/config: a
directory beside the project), then a fresh `git clone` + `dvc pull` +
`dvc repro`: nothing reruns. Restricted to the data and the subset stage
(the other stages train networks)."""
from __future__ import annotations

import shutil

import pytest
from service_procs import copy_project

from tests.conftest import REPO, sh

pytestmark = pytest.mark.slow
TARGETS = ("data.dvc", "subset")


def test_push_then_fresh_clone_pull_repro_reruns_nothing(template_project, tmp_path):
    project = copy_project(template_project, tmp_path / "project")
    shutil.copy2(REPO / ".dvc" / "config", project / ".dvc" / "config")
    sh("dvc", "repro", "subset", cwd=project)
    sh("git", "add", ".dvc/config", "dvc.lock", "metrics", "artifacts/.gitignore", cwd=project)
    sh("git", "commit", "-qm", "pipeline results", cwd=project)

    pushed = sh("dvc", "push", *TARGETS, cwd=project)
    remote = tmp_path / "nasflow-dvc-remote"  # ../nasflow-dvc-remote of the project, as configured
    assert remote.is_dir() and any(p.is_file() for p in remote.rglob("*")), pushed.stdout

    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(project), str(clone), cwd=tmp_path)
    assert not (clone / "artifacts" / "subset").exists() and not (clone / "data").exists()
    sh("dvc", "pull", *TARGETS, cwd=clone)
    assert (clone / "artifacts" / "subset").is_dir() and (clone / "data").is_dir()

    repro = sh("dvc", "repro", "subset", cwd=clone)
    assert "Running stage" not in repro.stdout, repro.stdout
    assert "up to date" in sh("dvc", "status", *TARGETS, cwd=clone).stdout
    assert not (clone / "mlflow.db").exists()  # no stage ran, so nothing was logged
    assert sh("git", "status", "--porcelain", cwd=clone).stdout.strip() == ""
