"""Shared fixtures: real services on 127.0.0.1, tiny projects in temporary
git repositories, CPU only."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MNIST_T10K = REPO.parent / "shared" / "datasets" / "mnist-t10k"

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ['PATH']}"
for var, value in (("GIT_AUTHOR_NAME", "nasflow tests"), ("GIT_AUTHOR_EMAIL", "tests@nasflow.local"),
                   ("GIT_COMMITTER_NAME", "nasflow tests"), ("GIT_COMMITTER_EMAIL", "tests@nasflow.local")):
    os.environ.setdefault(var, value)
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("NASFLOW_PARENT_RUN_ID", None)

PROJECT_FILES = ("dvc.yaml", "params.yaml", ".dvcignore", "prefect.toml", "data.dvc")
CODE_DIRS = ("nas_core", "tasks", "flows", ".deps")  # .deps: links DVC hashes through (flows/deps.py)


def sh(*cmd: str, cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=check,
                          env={**os.environ, **(env or {})})


def make_project(dest: Path) -> Path:
    """A copy of the project's DVC wiring and code in a fresh git repo with
    the digits data materialised (the code itself runs from the install)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        shutil.copy2(REPO / name, dest / name)
    for name in CODE_DIRS:
        shutil.copytree(REPO / name, dest / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    sh("git", "init", "-q", "-b", "main", cwd=dest)
    sh("dvc", "init", "-q", cwd=dest)
    sh("dvc", "config", "core.analytics", "false", cwd=dest)
    sh("nasflow", "prepare", cwd=dest)
    sh("git", "add", "-A", cwd=dest)
    sh("git", "commit", "-qm", "project", cwd=dest)
    return dest


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "project")


@pytest.fixture(scope="session")
def prefect_server():
    """One real Prefect API for the whole session (the test harness)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture(scope="session", autouse=True)
def digits_data() -> Path:
    """The embedded default dataset, as `nasflow prepare` writes it."""
    from nas_core.data import materialize_digits

    return materialize_digits(REPO / "data")


@contextlib.contextmanager
def fd2_to(path: Path) -> Iterator[None]:
    """Point file descriptor 2 at ``path``: worker processes started inside
    inherit it, as they inherit the stage process's stderr (the stage log).
    (pytest's capfd is not used with Prefect: its console handler keeps the
    captured stream after the test closes it.)"""
    saved = os.dup(2)
    with open(path, "w") as f:
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
