"""MLflow tracking for stages: one parent run per pipeline execution, a
nested run per stage (and per cluster / finalist), always created with an
explicit ``parent_run_id`` because MLflow's active run is thread-local.

:class:`RunLogger` wraps an ``MlflowClient`` and one run id, so it is safe to
use from any thread. ``write_stage_metrics`` is the one place a stage's
metrics are written: ``metrics/<stage>.json`` for DVC and the same dict to
MLflow.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Mapping

import mlflow
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from nas_core.config import Params
from nas_core.io import write_json

PARENT_ENV = "NASFLOW_PARENT_RUN_ID"
FLOW_RUN_ENV = "NASFLOW_PREFECT_FLOW_RUN_ID"
MAX_PARAM_CHARS = 6000


class TrackingUnavailable(RuntimeError):
    """The tracking server cannot be reached (a transient failure)."""


def unreachable(exc: BaseException) -> bool:
    """True when ``exc`` (an MlflowException from the REST client) was
    caused by a server that cannot be reached: refused, reset, timed out."""
    import requests

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            return True
        seen = seen.__cause__ or seen.__context__
    return "Max retries exceeded" in str(exc)


class ServerGuard:
    """An ``MlflowClient`` whose calls raise :class:`TrackingUnavailable`
    (exit code 75, retried by the pipeline) when the tracking server stops
    answering mid-stage, instead of a generic MlflowException (exit 1)."""

    def __init__(self, client: MlflowClient) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attr(*args, **kwargs)
            except mlflow.exceptions.MlflowException as exc:
                if unreachable(exc):
                    raise TrackingUnavailable(f"MLflow server {self._client.tracking_uri!r} stopped answering "
                                              f"({name}): {exc}") from exc
                raise

        return call


def tracking_uri(params: Params, root: Path) -> str:
    """MLFLOW_TRACKING_URI wins, then ``tracking.uri``, then the project's
    sqlite store (the file store is refused by MLflow 3.13+)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or params.tracking.uri or f"sqlite:///{root.resolve()}/mlflow.db"


def check_server(uri: str, retries: int, wait: float = 2.0) -> None:
    """For an http(s) URI, wait for the server's /health; raise
    :class:`TrackingUnavailable` naming the URI when it never answers."""
    if not uri.startswith(("http://", "https://")):
        return
    # bound MLflow's own per-request retries (default 7, about 4 minutes) by tracking.retries
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(retries))
    last: Exception | None = None
    for attempt in range(retries + 1):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError as exc:
            last = exc
        if attempt < retries:
            time.sleep(wait * (attempt + 1))
    raise TrackingUnavailable(f"tracking.uri = {uri!r}: MLflow server not reachable after {retries + 1} tries "
                              f"({last}); start it with `make ui` or fix tracking.uri")


def experiment_id(client: MlflowClient, name: str, root: Path) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if not client.tracking_uri.startswith(("http://", "https://")):
        location = (root.resolve() / "mlruns").as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:  # created concurrently
        return client.get_experiment_by_name(name).experiment_id


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


class RunLogger:
    """One MLflow run, addressed by id (thread-safe, no active-run state)."""

    def __init__(self, client: MlflowClient, run_id: str, experiment_id: str) -> None:
        self.client, self.run_id, self.experiment_id = client, run_id, experiment_id

    @classmethod
    def start(cls, uri: str, experiment: str, run_name: str, root: Path,
              parent_run_id: str | None = None, tags: Mapping[str, str] | None = None) -> "RunLogger":
        client = ServerGuard(MlflowClient(tracking_uri=uri))
        exp = experiment_id(client, experiment, root)
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = client.create_run(exp, run_name=run_name, tags=all_tags)
        return cls(client, run.info.run_id, exp)

    def child(self, name: str, tags: Mapping[str, str] | None = None) -> "RunLogger":
        tags = {"mlflow.parentRunId": self.run_id, **(tags or {})}
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        return RunLogger(self.client, run.info.run_id, self.experiment_id)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:MAX_PARAM_CHARS]) for k, v in flatten(params).items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start:start + 100])

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in flatten(metrics).items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)]
        for start in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[start:start + 500])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dict(self, obj: Any, name: str) -> None:
        self.client.log_dict(self.run_id, obj, name)

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, text, name)

    def log_figure(self, figure: Any, name: str) -> None:
        self.client.log_figure(self.run_id, figure, name)

    def register_model(self, name: str, artifact_path: str, description: str,
                       tags: Mapping[str, str]) -> str:
        """A new version of registered model ``name`` (created on first use)
        pointing at this run's ``artifact_path``; returns the version."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self.client.create_registered_model(name, description=description)
        version = self.client.create_model_version(name, source=f"runs:/{self.run_id}/{artifact_path}",
                                                   run_id=self.run_id, tags=dict(tags))
        return str(version.version)

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=RunStatus.to_string(getattr(RunStatus, status)))


def git_commit(root: Path) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def dvc_lock_entry_hash(root: Path, stage: str) -> str:
    """sha256 of the stage's entry in dvc.lock (what a cached skip reused)."""
    import hashlib

    import yaml

    lock = root / "dvc.lock"
    if not lock.is_file():
        return "none"
    entry = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).get(stage)
    if entry is None:
        return "none"
    return hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()[:16]


def write_stage_metrics(root: Path, stage: str, metrics: Mapping[str, Any], log: RunLogger | None) -> Path:
    """The one helper for a stage's metrics: metrics/<stage>.json + MLflow."""
    path = root / "metrics" / f"{stage}.json"
    write_json(path, dict(metrics))
    if log is not None:
        log.log_metrics(metrics)
    return path


def log_figure_file(log: RunLogger, figure: Any, out: Path, name: str) -> Path:
    """Save a matplotlib figure under ``out`` and log it to MLflow."""
    import matplotlib.pyplot as plt

    path = out / name
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        tmp_path = Path(tmp) / name
        figure.savefig(tmp_path, dpi=110, bbox_inches="tight")
        os.replace(tmp_path, path)
    plt.close(figure)
    log.log_artifact(path)
    return path
