"""The study is a DVC pipeline of its own: `dvc repro` in the project root
never plans its stages, and dvc run by path (no venv on PATH) still finds
`nasflow` for the stage commands."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import BIN, REPO, make_project, sh


def clone_with_study(dest: Path) -> Path:
    """A fresh clone whose main chain is cut to its first stage (a finished
    `make run` in miniature), the study pipeline beside it and the project
    venv at .venv, as `make install` leaves it."""
    project = make_project(dest)
    main = yaml.safe_load((project / "dvc.yaml").read_text())
    main["stages"] = {"subset": main["stages"]["subset"]}
    (project / "dvc.yaml").write_text(yaml.safe_dump(main, sort_keys=False))
    (project / "ablation").mkdir()
    shutil.copy(REPO / "ablation" / "dvc.yaml", project / "ablation" / "dvc.yaml")
    (project / ".venv").symlink_to(BIN.parent)
    sh("git", "add", "-A", cwd=project)
    sh("git", "commit", "-qm", "study", cwd=project)
    return project


@pytest.mark.slow
def test_root_repro_never_starts_the_study_and_dvc_by_path_finds_nasflow(tmp_path):
    project = clone_with_study(tmp_path / "clone")
    bare = {**os.environ, "PATH": "/usr/bin:/bin", "MLFLOW_TRACKING_URI": f"sqlite:///{project}/mlflow.db"}
    dvc = [str(project / ".venv" / "bin" / "dvc")]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(dvc + list(args), cwd=project, env=bare, capture_output=True, text=True)

    first = run("repro")
    assert first.returncode == 0, first.stdout + first.stderr  # not exit 127: nasflow found without PATH
    assert "Running stage 'subset'" in first.stdout and "ablation" not in first.stdout
    again = run("repro")
    assert again.returncode == 0 and "Data and pipelines are up to date" in again.stdout
    assert not (project / "artifacts" / "ablation_train").exists()  # the study waits to be asked for
    study = run("stage", "list", "ablation/dvc.yaml")
    assert "ablation_train" in study.stdout and "ablation_grid" in study.stdout
