"""The committed prefect.yaml against a real `prefect server start` (own
PREFECT_HOME, free port), a process work pool and `prefect worker start`:
deploy, trigger the manual deployment with a tiny override, it completes;
the nightly cron schedule is registered and its next run is scheduled."""
from __future__ import annotations

import datetime as dt
import json
import re
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy
import yaml
from packaging.version import Version
from service_procs import HOST, Service, copy_project, free_port, http_ok

from tests.conftest import REPO, sh

pytestmark = pytest.mark.slow
POOL = "nasflow-process"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
PREFECT = str(Path(sys.executable).parent / "prefect")
CONFIG = yaml.safe_load((REPO / "prefect.yaml").read_text())
NIGHTLY = next(d for d in CONFIG["deployments"] if d["name"] == "nas-pipeline-nightly")


class Api:
    """A sync Prefect client bound to one server URL (independent of any
    other API this test process may be configured for)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __enter__(self):
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        self._settings = temporary_settings(updates={PREFECT_API_URL: self.url})
        self._settings.__enter__()
        self._client = get_client(sync_client=True)
        return self._client.__enter__()

    def __exit__(self, *exc):
        self._client.__exit__(*exc)
        self._settings.__exit__(*exc)


@pytest.fixture(scope="module")
def deployed(template_project, tmp_path_factory):
    """Server + worker running, `prefect --no-prompt deploy --all` done."""
    tmp = tmp_path_factory.mktemp("prefect")
    project = copy_project(template_project, tmp / "project")
    port = free_port()
    url = f"http://{HOST}:{port}/api"
    env = {"PREFECT_HOME": str(tmp / "home"), "PREFECT_API_URL": url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2", "PREFECT_WORKER_QUERY_SECONDS": "2",
           "PWD": str(project)}
    server = Service("prefect-server", [PREFECT, "server", "start", "--host", HOST, "--port", str(port)], tmp,
                     cwd=project, env=env)
    services = [server]
    try:
        server.wait_until(http_ok(url + "/health"), 240, "/api/health")
        worker = Service("prefect-worker", [PREFECT, "worker", "start", "--pool", POOL, "--type", "process"], tmp,
                         cwd=tmp, env=env)
        services.append(worker)
        worker.wait_until(lambda: pool_exists(url), 180, f"work pool {POOL}")
        deploy = sh(PREFECT, "--no-prompt", "deploy", "--all", cwd=project, env=env, check=False)
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        yield project, url, env, worker
    finally:
        for service in reversed(services):
            service.stop()


def pool_exists(url: str) -> bool:
    from prefect.exceptions import ObjectNotFound

    with Api(url) as client:
        try:
            client.read_work_pool(POOL)
            return True
        except ObjectNotFound:
            return False


def wait_for_final_state(url: str, flow_run_id: str, timeout: float, worker: Service):
    deadline = time.monotonic() + timeout
    with Api(url) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(flow_run_id)
            if run.state and run.state.type.value in FINAL:
                return run
            time.sleep(2)
    raise TimeoutError(f"flow run {flow_run_id} not finished after {timeout:.0f} s:\n{worker.tail()}")


def test_manual_deployment_runs_stages_and_updates_dvc(deployed):
    project, url, env, worker = deployed
    trigger = sh(PREFECT, "deployment", "run", "nas-pipeline/nas-pipeline-manual",
                 "-p", 'overrides={"subset.fraction": 0.4}', "-p", 'stages=["subset"]', cwd=project, env=env)
    flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", trigger.stdout).group(1)
    run = wait_for_final_state(url, flow_run_id, 420, worker)
    assert run.state.type.value == "COMPLETED", worker.tail(80)

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with Api(url) as client:
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    assert {(t.name, t.state.type.value) for t in task_runs} == {("subset", "COMPLETED")}

    assert "fraction: 0.4" in (project / "params.yaml").read_text()
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["subset"]
    assert lock["params"]["params.yaml"]["subset"]["fraction"] == 0.4
    assert (project / "artifacts" / "subset").is_dir()
    assert json.loads((project / "metrics" / "subset.json").read_text())["probe_count"] == 256
    assert "up to date" in sh("dvc", "status", "subset", cwd=project).stdout


def test_nightly_cron_schedule_is_registered_with_timezone(deployed):
    _, url, _, _ = deployed
    with Api(url) as client:
        nightly = client.read_deployment_by_name("nas-pipeline/nas-pipeline-nightly")
        manual = client.read_deployment_by_name("nas-pipeline/nas-pipeline-manual")
    (schedule,) = nightly.schedules
    want = NIGHTLY["schedules"][0]
    assert schedule.active and schedule.schedule.cron == want["cron"]
    assert schedule.schedule.timezone == want["timezone"]
    assert manual.schedules == [] and nightly.work_pool_name == manual.work_pool_name == POOL
    assert nightly.parameters["overrides"] == {}


def next_cron_time(now: dt.datetime, cron: str, tz: str) -> dt.datetime:
    """Next time of a daily 'M H * * *' cron in ``tz``, as UTC."""
    minute, hour = (int(x) for x in cron.split()[:2])
    local = now.astimezone(ZoneInfo(tz))
    candidate = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if candidate <= local:
        candidate = (local + dt.timedelta(days=1)).replace(hour=hour, minute=minute, second=0, microsecond=0)
    return candidate.astimezone(dt.timezone.utc)


@pytest.mark.xfail(Version(sqlalchemy.__version__) >= Version("2.1"), strict=True,
                   reason="prefect 3.8.8's scheduler cannot insert runs with SQLAlchemy 2.1 "
                          "('Can't evaluate bulk DML statement'): pin sqlalchemy<2.1")
def test_server_schedules_the_next_nightly_run(deployed):
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    _, url, _, _ = deployed
    deadline = time.monotonic() + 20  # the scheduler loop runs every 2 s here
    with Api(url) as client:
        nightly = client.read_deployment_by_name("nas-pipeline/nas-pipeline-nightly")
        runs = []
        while not runs and time.monotonic() < deadline:
            runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[nightly.id])))
            time.sleep(2)
    assert runs, "the scheduler created no run for the nightly deployment"
    first = min(r.expected_start_time for r in runs)
    want = NIGHTLY["schedules"][0]
    assert first == next_cron_time(dt.datetime.now(dt.timezone.utc), want["cron"], want["timezone"])
    assert all(r.state.type.value == "SCHEDULED" for r in runs)
