"""Fixtures for the service tests: one prepared tiny project per session,
copied per test (saves preparing the data again); one `mlflow server`."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from service_procs import HOST, Service, free_port, http_ok

from tests.conftest import REPO, make_project, sh


@pytest.fixture(scope="session")
def template_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny project (tests/conftest.py's make_project) plus prefect.yaml."""
    root = make_project(tmp_path_factory.mktemp("template") / "project")
    shutil.copy2(REPO / "prefect.yaml", root / "prefect.yaml")
    sh("git", "add", "prefect.yaml", cwd=root)
    sh("git", "commit", "-qm", "deployments", cwd=root)
    return root


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """`mlflow server` as `make ui` starts it, on a free loopback port."""
    home = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", HOST, "--port", str(port),
           "--backend-store-uri", f"sqlite:///{home}/mlflow.db", "--artifacts-destination", str(home / "artifacts"),
           "--workers", "1"]
    server = Service("mlflow-server", cmd, home, env={"MLFLOW_DISABLE_TELEMETRY": "true",
                                                      "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    uri = f"http://{HOST}:{port}"
    try:
        server.wait_until(http_ok(uri + "/health"), 120, "/health")
        yield uri
    finally:
        server.stop()
