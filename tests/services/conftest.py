"""Fixtures for the service tests: one prepared tiny project per session,
copied per test (saves preparing the data again)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO, make_project, sh


@pytest.fixture(scope="session")
def template_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny project (tests/conftest.py's make_project) plus prefect.yaml."""
    root = make_project(tmp_path_factory.mktemp("template") / "project")
    shutil.copy2(REPO / "prefect.yaml", root / "prefect.yaml")
    sh("git", "add", "prefect.yaml", cwd=root)
    sh("git", "commit", "-qm", "deployments", cwd=root)
    return root
