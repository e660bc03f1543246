"""The ``nas-ablation`` Prefect flow: the channel-ratio Table-1 ablation
(dc-nas.md §4.1) as its own flow. It runs the stages up to
``ablation_grid`` (subset -> ablation_train -> ablation_grid) through the
``nas-pipeline`` flow, so every stage still goes through ``dvc repro`` and
unchanged stages are skipped, then prints the Table-1-style table and the
regret / Kendall τ summary.

``nasflow ablation [--params FILE] [--set KEY=VALUE ...]``; for example a
reduced grid: ``nasflow ablation --set ablation.num_archs=40 --set
ablation.k_list=[1,3,5]``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from prefect import flow

from flows.pipeline import StageFailed, nas_pipeline, parse_overrides

TARGET = "ablation_grid"


@flow(name="nas-ablation", log_prints=True)
def nas_ablation(root: str = ".", params_file: str = "params.yaml",
                 overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    result = nas_pipeline(root, params_file, overrides, [TARGET])
    project = Path(root).resolve()
    table = project / "artifacts" / TARGET / "table1.md"
    result["table"] = table.read_text() if table.is_file() else ""
    metrics = project / "metrics" / f"{TARGET}.json"
    result["metrics"] = json.loads(metrics.read_text()) if metrics.is_file() else {}
    return result


def summary_lines(result: dict[str, Any]) -> list[str]:
    """Global early stopping vs the best DC-NAS cell vs random search."""
    m = result["metrics"]
    lines = ["stages: " + ", ".join(f"{s} ({st})" for s, st in result["stages"].items())]
    if m:
        lines.append(f"test accuracy (largest eta; K of Table 2): global early stopping (K=1) "
                     f"{m.get('global_es.test_acc', float('nan')):.4f}, DC-NAS {m['dcnas.test_acc']:.4f}, "
                     f"random search {m['rs.test_acc']:.4f}")
        if "tau_global" in m:
            lines.append(f"Kendall tau (early-stopping vs final accuracy, all networks): {m['tau_global']:.3f}")
    lines.append(f"tables: artifacts/{TARGET}/table1.md   MLflow parent run {result['parent_run_id']}")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nasflow ablation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a param (written to the params file so DVC sees it)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv[1:] if argv[:1] == ["--"] else argv)
    try:
        result = nas_ablation(str(Path.cwd()), args.params, parse_overrides(args.overrides))
    except StageFailed as exc:
        print(f"nasflow: {exc} (its log is above)", file=sys.stderr)
        return exc.code if exc.code > 0 else 1
    print(result["table"])
    print("\n".join(summary_lines(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
