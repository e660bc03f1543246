"""The ``nas-ablation`` Prefect flow: the channel-ratio Table-1 study
(dc-nas.md §4.1) on any ``data.source``. It is its own DVC pipeline,
``ablation/dvc.yaml`` (so ``dvc repro`` of the main chain never starts it):
the flow reproduces the main chain's ``subset`` stage it reads, then
``ablation_train`` and ``ablation_grid``, each through ``dvc repro
--single-item`` (unchanged stages are skipped, finished networks are never
retrained), and prints the report.

MLflow: one parent run per study (``ablation:<dataset>``, tagged with the
dataset, preset and replicates, its params logged) holding the stage runs;
the ablation_grid stage run holds one nested run per replicate. Studies on
two datasets sit side by side in the experiment.

``nasflow ablation [--params FILE] [--repeats R] [--set KEY=VALUE ...]``;
e.g. ``nasflow ablation --repeats 3 --set ablation.preset=smoke``.
``--repeats R`` is ``--set ablation.repeats=R`` (written to params.yaml so DVC
sees it).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from prefect import flow
from prefect.runtime import flow_run

from flows.dag import stage_order
from flows.options import add_study_options
from flows.pipeline import StageFailed, prefect_api_url, run_dvc_stage, write_overrides
from nas_core.config import load_params, parse_overrides
from tasks.tracking import FLOW_RUN_ENV, PARENT_ENV, RunLogger, git_commit, tracking_uri

STUDY = "ablation/dvc.yaml"
TARGET = "ablation_grid"
UPSTREAM = ("subset",)  # the main-chain stages the study reads


def study_order(project: Path) -> list[str]:
    """The main-chain stages the study needs, then the study's stages
    addressed by file (``ablation/dvc.yaml:ablation_train``)."""
    main = stage_order(project / "dvc.yaml", list(UPSTREAM))
    return main + [f"{STUDY}:{name}" for name in stage_order(project / STUDY)]


@flow(name="nas-ablation", log_prints=True)
def nas_ablation(root: str = ".", params_file: str = "params.yaml",
                 overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    project = Path(root).resolve()
    if overrides:
        write_overrides(project / params_file, overrides)
    params = load_params(project / params_file)
    cfg = params.ablation
    flow_run_id = str(flow_run.get_id() or "")
    parent = RunLogger.start(tracking_uri(params, project), params.tracking.experiment,
                             f"ablation:{params.data.source}", project,
                             tags={"prefect.flow_run_id": flow_run_id, "nasflow.kind": "ablation",
                                   "nasflow.dataset": params.data.source, "nasflow.preset": cfg.preset,
                                   "nasflow.replicates": str(cfg.repeats),
                                   "mlflow.source.git.commit": git_commit(project)})
    parent.log_params(params.model_dump(mode="json"))
    env = {PARENT_ENV: parent.run_id, FLOW_RUN_ENV: flow_run_id, "NASFLOW_PROGRESS_INTERVAL": "10",
           "PREFECT_API_URL": prefect_api_url()}
    status: dict[str, str] = {}
    try:
        for stage in study_order(project):
            status[stage.split(":")[-1]] = run_dvc_stage(stage, str(project), env)
    except BaseException:
        parent.end("FAILED")
        raise
    result = {"parent_run_id": parent.run_id, "experiment_id": parent.experiment_id, "stages": status,
              **read_outputs(project)}
    if result["metrics"]:
        parent.log_metrics(result["metrics"])
    parent.end("FINISHED")
    return result


def read_outputs(project: Path) -> dict[str, Any]:
    report = project / "artifacts" / TARGET / "report.md"
    metrics = project / "metrics" / f"{TARGET}.json"
    return {"table": report.read_text() if report.is_file() else "",
            "metrics": json.loads(metrics.read_text()) if metrics.is_file() else {}}


def summary_lines(result: dict[str, Any]) -> list[str]:
    """Global early stopping vs DC-NAS vs random search at the largest η."""
    m = result["metrics"]
    lines = ["stages: " + ", ".join(f"{s} ({st})" for s, st in result["stages"].items())]
    if m:
        lines.append(f"test accuracy (largest eta; K of Table 2; mean of {int(m.get('replicates', 1))} "
                     f"replicate(s)): global early stopping (K=1) {m.get('global_es.test_acc', float('nan')):.4f}, "
                     f"DC-NAS {m['dcnas.test_acc']:.4f}, random search {m['rs.test_acc']:.4f}")
        if "tau_global" in m:
            lines.append(f"Kendall tau (early-stopping vs final accuracy, all networks): {m['tau_global']:.3f}")
    lines.append(f"report: artifacts/{TARGET}/report.md   MLflow parent run {result['parent_run_id']}")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nasflow ablation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    add_study_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run(build_parser().parse_args(argv[1:] if argv[:1] == ["--"] else argv))


def run(args: argparse.Namespace) -> int:
    """The study with ``args`` (``--params``, ``--repeats``, ``--set``)."""
    overrides = parse_overrides(args.overrides)
    if args.repeats is not None:
        overrides["ablation.repeats"] = args.repeats
    try:
        result = nas_ablation(str(Path.cwd()), args.params, overrides)
    except StageFailed as exc:
        print(f"nasflow: {exc} (its log is above)", file=sys.stderr)
        return exc.code if exc.code > 0 else 1
    print(result["table"])
    print("\n".join(summary_lines(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
