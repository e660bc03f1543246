"""A tracking server that stops answering mid-stage is a transient failure
(TrackingUnavailable, exit 75), not a generic error."""
from __future__ import annotations

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from service_procs import HOST, free_port

from tasks.tracking import ServerGuard, TrackingUnavailable


def test_unreachable_server_raises_tracking_unavailable(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    uri = f"http://{HOST}:{free_port()}"
    guard = ServerGuard(MlflowClient(tracking_uri=uri))
    with pytest.raises(TrackingUnavailable, match="stopped answering"):
        guard.log_metric("0" * 32, "loss", 1.0)
    assert guard.tracking_uri == uri


def test_other_tracking_errors_pass_through(tmp_path):
    guard = ServerGuard(MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"))
    with pytest.raises(mlflow.exceptions.MlflowException, match="not found"):
        guard.get_run("0" * 32)
