"""The ``nas-pipeline`` Prefect flow: the DAG of dvc.yaml, one Prefect task
per stage, each running ``dvc repro --single-item <stage>`` so DVC's caching
and dvc.lock stay the truth. One MLflow parent run per execution; stages
find it through the NASFLOW_PARENT_RUN_ID environment variable."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run

from flows.dag import stage_order
from flows.tools import tools_env
from nas_core.config import apply_overrides, load_params, parse_overrides, read_params_file, validate_params
from nas_core.io import atomic_path
from tasks.context import ARTIFACTS
from tasks.live import duration
from tasks.tracking import (
    FLOW_RUN_ENV,
    PARENT_ENV,
    RunLogger,
    dataset_inputs,
    dataset_name,
    dvc_lock_entry_hash,
    git_commit,
    tracking_uri,
    ui_link,
)

#: What `nasflow pipeline` runs by default: the main chain up to retraining
#: (the channel-ratio ablation has its own flow, `nasflow ablation`).
MAIN_TARGETS = ("retrain",)
TRANSIENT_CODES = {75}  # EX_TEMPFAIL from `nasflow stage` (tracking server down)


class StageFailed(RuntimeError):
    def __init__(self, stage: str, code: int) -> None:
        super().__init__(f"stage {stage!r} failed with exit code {code}")
        self.stage, self.code = stage, code

    @property
    def transient(self) -> bool:
        return self.code in TRANSIENT_CODES or self.code < 0  # killed by a signal


def retry_transient(task_obj: Any, task_run: Any, state: Any) -> bool:
    """Retry only failures that may pass: a server that was down, a stage
    killed by a signal. Bad params (exit 2) and NaN (exit 3) never retry."""
    exc = state.result(raise_on_failure=False)
    return isinstance(exc, StageFailed) and exc.transient


@task(name="dvc-stage", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_transient,
      task_run_name="{stage}")
def run_dvc_stage(stage: str, root: str, env: dict[str, str]) -> str:
    """Run one stage through DVC, streaming its output into Prefect's log;
    returns "ran" or "cached"."""
    logger = get_run_logger()
    cmd = ["dvc", "repro", "--single-item", stage]
    proc = subprocess.Popen(cmd, cwd=root, env=tools_env({**os.environ, **env}), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    skipped = False
    for line in proc.stdout:  # type: ignore[union-attr]
        line = line.rstrip()
        if line:
            logger.info(line)
        skipped |= "didn't change, skipping" in line or "is cached - skipping" in line
    code = proc.wait()
    if code != 0:
        raise StageFailed(stage, code)
    return "cached" if skipped else "ran"


def prefect_api_url() -> str:
    """The API this flow reports to (the temporary server included), so
    fan-out flows inside stage subprocesses show up in the same place."""
    with get_client(sync_client=True) as client:
        return str(client.api_url)


def write_overrides(params_file: Path, overrides: dict[str, Any]) -> None:
    """Validate the merged params, then write them (atomically) so DVC sees
    every change; the file is untouched when validation fails. A round-trip
    YAML writer keeps the file's comments and key order, and writes None
    as ``null`` as the file does (ruamel's default leaves the value empty)."""
    from ruamel.yaml import YAML

    read_params_file(params_file)  # clear errors for a missing or malformed file
    round_trip = YAML()
    round_trip.representer.add_representer(
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null"))
    raw = apply_overrides(round_trip.load(params_file.read_text()), overrides)
    validate_params(raw, source=f"{params_file} with overrides")
    with atomic_path(params_file) as tmp, open(tmp, "w") as f:
        round_trip.dump(raw, f)


@flow(name="nas-pipeline", log_prints=True)
def nas_pipeline(root: str = ".", params_file: str = "params.yaml",
                 overrides: dict[str, Any] | None = None, stages: list[str] | None = None) -> dict[str, Any]:
    project = Path(root).resolve()
    if overrides:
        write_overrides(project / params_file, overrides)
    params = load_params(project / params_file)
    order = stage_order(project / "dvc.yaml", stages or list(MAIN_TARGETS))
    flow_run_id = str(flow_run.get_id() or "")
    parent = RunLogger.start(tracking_uri(params, project), params.tracking.experiment, "pipeline", project,
                             tags={"prefect.flow_run_id": flow_run_id, "nasflow.kind": "pipeline",
                                   "mlflow.source.git.commit": git_commit(project)})
    parent.log_params(params.model_dump(mode="json"))
    parent.describe(f"NAS pipeline: strategy {params.search.strategy} on search space {params.search.space}, "
                    f"dataset {dataset_name(params.data)}; stages {' -> '.join(order)}")
    env = {PARENT_ENV: parent.run_id, FLOW_RUN_ENV: flow_run_id, "NASFLOW_PROGRESS_INTERVAL": "10",
           "PREFECT_API_URL": prefect_api_url()}
    status: dict[str, str] = {}
    seconds: dict[str, float] = {}
    try:
        for stage in order:
            start = time.perf_counter()
            status[stage] = run_dvc_stage(stage, str(project), env)
            seconds[stage] = time.perf_counter() - start
            parent.set_tags({f"stage.{stage}": status[stage],
                             f"dvc.lock.{stage}": dvc_lock_entry_hash(project, stage)})
            parent.log_metrics({f"stage_seconds.{stage}": seconds[stage]})
            if not parent.inputs:  # the dataset, once the subset stage has (re)written its manifest
                manifest = project / ARTIFACTS / "subset" / "manifest.json"
                parent.log_inputs(dataset_inputs(params.data, project, manifest))
    except BaseException:
        parent.end("FAILED")
        raise
    parent.end("FINISHED")
    return {"parent_run_id": parent.run_id, "experiment_id": parent.experiment_id, "stages": status,
            "seconds": seconds}


def summary_lines(project: Path, result: dict[str, Any]) -> list[str]:
    """What `make run` prints at the end: stage status, the result, where to look."""
    seconds = result.get("seconds", {})
    lines = ["stages: " + ", ".join(f"{s} ({st}, {duration(seconds[s])})" if s in seconds else f"{s} ({st})"
                                    for s, st in result["stages"].items())]
    retrain = project / "metrics" / "retrain.json"
    chosen = project / "artifacts" / "retrain" / "chosen.json"
    if retrain.is_file() and chosen.is_file():
        m, c = json.loads(retrain.read_text()), json.loads(chosen.read_text())
        lines.append(f"chosen architecture N*: {c.get('label', c.get('genotype'))}")
        lines.append(f"test accuracy: {m.get('chosen_test_acc', float('nan')):.4f}  "
                     f"(the search strategy's own genotype: {m.get('baseline_test_acc', float('nan')):.4f})")
        if "random_control" in c:
            lines.append(f"random control at DC-NAS's selection compute: {c['random_control']['test_acc']:.4f} "
                         f"(best by validation of {c['random_control']['networks']} random networks)")
    lines.append(f"metrics: {project / 'metrics'}   artifacts: {project / 'artifacts'}")
    lines.append(f"MLflow: `make ui`, then {ui_link(result['experiment_id'])} (runs table; parent run "
                 f"{ui_link(result['experiment_id'], result['parent_run_id'])})")
    return lines


def main(args: argparse.Namespace) -> int:
    project = Path.cwd()
    try:
        result = nas_pipeline(str(project), args.params, parse_overrides(args.overrides), args.stages)
    except StageFailed as exc:
        print(f"nasflow: {exc} (its log is above)", file=sys.stderr)
        return exc.code if exc.code > 0 else 1
    print("\n".join(summary_lines(project, result)))
    return 0


if __name__ == "__main__":
    sys.exit(main(argparse.Namespace(params="params.yaml", overrides=[], stages=None)))
