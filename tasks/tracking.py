"""MLflow tracking for stages: one parent run per pipeline execution, a
nested run per stage (and per cluster / finalist), always created with an
explicit ``parent_run_id`` because MLflow's active run is thread-local.

:class:`RunLogger` wraps an ``MlflowClient`` and one run id, so it is safe to
use from any thread. ``write_stage_metrics`` is the one place a stage's
metrics are written: ``metrics/<stage>.json`` for DVC and the same dict to
MLflow.

First use of a store: opening a new database store makes MLflow create and
migrate its schema, and several processes doing that at once race (alembic
"Online migration expected to match one row"). :func:`open_client` opens
a store the first time in a process under an inter-process file lock
(:func:`store_lock_path`), so stages, pipeline runs and fan-out workers may
all start at the same moment against a new store.

What MLflow's UI shows: experiments are created as model-training
experiments (tag ``mlflow.experimentKind``), so it opens on the runs table
rather than the GenAI overview; stage runs carry the dataset as MLflow
inputs (:func:`dataset_inputs`), so the Dataset column, filters and
grouping work.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import threading
import time
import urllib.request
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import mlflow
import numpy as np
from filelock import FileLock, Timeout
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import DatasetInput, InputTag, RunStatus
from mlflow.tracking import MlflowClient
from mlflow.types import Schema, TensorSpec

if TYPE_CHECKING:  # importing nas_core pulls in torch: fan-out workers and tools need only MLflow here
    from nas_core.config import DataConfig, Params

PARENT_ENV = "NASFLOW_PARENT_RUN_ID"
FLOW_RUN_ENV = "NASFLOW_PREFECT_FLOW_RUN_ID"
MAX_PARAM_CHARS = 6000
#: the experiment tag MLflow 3's UI reads to choose its landing page, and the
#: value for "model training" (the runs table; unset or genai: traces overview)
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
#: how long a process waits for another one to finish creating the store
STORE_LOCK_TIMEOUT = 600.0
#: MLflow input context -> the subset stage's split (see dataset_inputs)
DATASET_CONTEXTS = {"train": "full_train", "val": "val", "test": "test"}
DIGEST_CHARS = 12


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
    """The id of experiment ``name``, created as a model-training experiment
    when missing. An existing experiment without a kind gets that kind too;
    one whose kind is set (in the UI, say) keeps it."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        if EXPERIMENT_KIND_TAG not in found.tags:
            client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
        return found.experiment_id
    location = None
    if not client.tracking_uri.startswith(("http://", "https://")):
        location = (root.resolve() / "mlruns").as_uri()
    try:
        return client.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})
    except mlflow.exceptions.MlflowException:  # created concurrently (by another machine)
        return client.get_experiment_by_name(name).experiment_id


def ui_link(experiment_id: str, run_id: str | None = None, base: str = "http://127.0.0.1:5000") -> str:
    """A link into the MLflow UI that opens on the runs table (or a run).
    MLflow 3.17's UI picks its landing page from a UI-wide workflow type
    (the ``workflowType`` URL parameter, else the browser's last choice,
    GenAI by default), not from the experiment's kind tag: the link sets it."""
    route = f"{base.rstrip('/')}/#/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "")
    return f"{route}?workflowType=machine_learning"


def store_lock_path(uri: str) -> Path:
    """The lock file guarding first use of the store at ``uri``: beside the
    database file for sqlite (so it works for every process that can open
    that file); for a server or another database, a file in the temporary
    directory named by the URI's hash (processes of this machine; a server
    serialises its own writes, and a concurrent experiment creation from
    another machine is caught in :func:`experiment_id`)."""
    if uri.startswith("sqlite:"):
        from sqlalchemy.engine import make_url

        database = make_url(uri).database
        if database and database != ":memory:":
            path = Path(database).resolve()
            path.parent.mkdir(parents=True, exist_ok=True)
            return path.with_name(path.name + ".lock")
    return Path(tempfile.gettempdir()) / f"nasflow-tracking-{hashlib.sha256(uri.encode()).hexdigest()[:16]}.lock"


_OPENED: set[str] = set()
_OPENING = threading.Lock()


def open_client(uri: str) -> "ServerGuard":
    """A client of the store at ``uri``. The first one in a process is
    created holding the store's file lock: creating it opens the store,
    and MLflow creates and migrates a new database store right there. Use
    it wherever a process (a stage, a fan-out worker) may be the first to
    touch a store."""
    with _OPENING:
        if uri not in _OPENED:
            lock = store_lock_path(uri)
            try:
                with FileLock(lock, timeout=STORE_LOCK_TIMEOUT):
                    client = ServerGuard(MlflowClient(tracking_uri=uri))
            except Timeout:
                raise TrackingUnavailable(f"tracking store {uri!r}: still locked by another process after "
                                          f"{STORE_LOCK_TIMEOUT:.0f} s ({lock}); remove the lock file if no "
                                          "nasflow process is running") from None
            _OPENED.add(uri)
            return client
    return ServerGuard(MlflowClient(tracking_uri=uri))


def connect(uri: str, experiment: str, root: Path) -> tuple["ServerGuard", str]:
    """A client of the store at ``uri`` (:func:`open_client`) and the id of
    ``experiment`` in it (:func:`experiment_id`; two processes creating it
    at once both get the one that was created)."""
    client = open_client(uri)
    return client, experiment_id(client, experiment, root)


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
    """One MLflow run, addressed by id (thread-safe, no active-run state).
    Dataset inputs logged to a run are logged to its children as well."""

    def __init__(self, client: MlflowClient, run_id: str, experiment_id: str) -> None:
        self.client, self.run_id, self.experiment_id = client, run_id, experiment_id
        self.inputs: list[DatasetInput] = []

    @classmethod
    def start(cls, uri: str, experiment: str, run_name: str, root: Path,
              parent_run_id: str | None = None, tags: Mapping[str, str] | None = None) -> "RunLogger":
        client, exp = connect(uri, experiment, root)
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = client.create_run(exp, run_name=run_name, tags=all_tags)
        return cls(client, run.info.run_id, exp)

    def child(self, name: str, tags: Mapping[str, str] | None = None) -> "RunLogger":
        tags = {"mlflow.parentRunId": self.run_id, **(tags or {})}
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        child = RunLogger(self.client, run.info.run_id, self.experiment_id)
        child.log_inputs(self.inputs)
        return child

    def log_inputs(self, inputs: list[DatasetInput]) -> None:
        """Dataset inputs (:func:`dataset_inputs`): the run's Dataset column."""
        if inputs:
            self.client.log_inputs(self.run_id, datasets=inputs)
            self.inputs = [*self.inputs, *inputs]

    def describe(self, text: str) -> None:
        """The run's description (MLflow shows it on the run page)."""
        self.client.set_tag(self.run_id, "mlflow.note.content", text)

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
    from nas_core.io import write_json

    path = root / "metrics" / f"{stage}.json"
    write_json(path, dict(metrics))
    if log is not None:
        log.log_metrics(metrics)
    return path


def dataset_name(data: DataConfig) -> str:
    """The dataset's name in MLflow: ``<source>:<root>`` as params.yaml
    gives them, e.g. ``digits:data`` or ``mnist:/datasets/mnist``."""
    return f"{data.source}:{data.root}"


def dataset_inputs(data: DataConfig, root: Path, manifest_path: Path) -> list[DatasetInput]:
    """The data a stage runs on, as MLflow dataset inputs read from the
    subset stage's manifest: one per context, ``train`` = D (the full
    training split the pipeline works on; D~ and the probe set are drawn
    from it as the logged ``subset`` params say), ``val`` and ``test``.
    Name :func:`dataset_name`; digest the first DIGEST_CHARS hex digits of
    the split's index-file sha256 in the manifest (the same split of the
    same source has the same digest on every machine, another seed or
    holdout fraction another one; the files' content is DVC's to version,
    data.dvc); source the data root; profile the image count, classes and
    input shape; schema the image tensor. Empty when there is no manifest
    for ``data.source`` (the subset stage has not run for these params)."""
    if not manifest_path.is_file():
        return []
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    manifest = json.loads(manifest_path.read_text())
    if manifest.get("source") != data.source:
        return []
    source = _data_source(Path(data.root) if Path(data.root).is_absolute() else root / data.root)
    inputs = []
    for context, split in DATASET_CONTEXTS.items():
        info = manifest["splits"][split]
        profile = {"num_rows": info["count"], "num_classes": manifest["num_classes"],
                   "input_shape": manifest["input_shape"], "split": split, "index_sha256": info["sha256"]}
        dataset = SplitDataset(source, dataset_name(data), info["sha256"][:DIGEST_CHARS], profile,
                               tuple(manifest["input_shape"]))
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)]))
    return inputs


def _data_source(path: Path) -> Any:
    """MLflow's dataset source for a local directory (two equivalent local
    sources are registered, which MLflow warns about on every call)."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        return resolve_dataset_source(path.resolve().as_uri())


class SplitDataset(MetaDataset):
    """A split of the image dataset as MLflow metadata: name, digest,
    source, the image tensor's schema and a profile."""

    def __init__(self, source: Any, name: str, digest: str, profile: dict[str, Any],
                 input_shape: tuple[int, ...]) -> None:
        self._profile = profile
        schema = Schema([TensorSpec(np.dtype(np.float32), (-1, *input_shape), "image")])
        super().__init__(source, name=name, digest=digest, schema=schema)

    @property
    def profile(self) -> dict[str, Any]:
        return self._profile

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "profile": json.dumps(self._profile)}


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
