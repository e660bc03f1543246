"""dvc.yaml's code deps cover what each stage imports, for every registered
(strategy, space) pair, and DVC reruns a stage when such code changes and
only then (flows/deps.py)."""
from __future__ import annotations

import pytest
import yaml

from flows.deps import PIPELINES, CodeDeps, expand, stage_code_deps, stale
from nas_core.strategies import STRATEGIES
from tests.conftest import REPO, make_project, sh

PAIRS = [(s, sp) for s in STRATEGIES.names() for sp in STRATEGIES.get(s).spaces]


@pytest.fixture(scope="module")
def code() -> CodeDeps:
    return CodeDeps(REPO)


def stages() -> list[tuple[str, str, dict]]:
    out = []
    for pipeline in PIPELINES:
        for name, spec in yaml.safe_load((REPO / pipeline).read_text())["stages"].items():
            out.append((pipeline, name, spec))
    return out


def covered(spec: dict, strategy: str, space: str) -> set:
    return set().union(*(expand(d, strategy, space, REPO) for d in spec["deps"] if isinstance(d, str)))


def test_the_committed_deps_and_links_are_what_nasflow_deps_writes():
    problems = stale(REPO)
    assert not problems, "run `nasflow deps` and commit:\n" + "\n".join(problems)


def test_every_stage_covers_its_imports_under_every_registered_pair(code):
    missing = []
    for pipeline, name, spec in stages():
        uses = stage_code_deps(code, name, spec.get("params", []))
        for strategy, space in PAIRS:
            needed = code.stage_closure(name)
            if any("${search.strategy}" in d for d in uses):
                needed |= code.strategy_closure(strategy)
            if any("${search.space}" in d for d in uses):
                needed |= code.space_closure(space)
            have = covered(spec, strategy, space)
            missing += [f"{pipeline}:{name} under ({strategy}, {space}): {p.relative_to(REPO)}"
                        for p in sorted(needed) if p.resolve() not in have and p.stat().st_size > 0]
    assert not missing, "\n".join(missing[:40])


@pytest.mark.parametrize("stage, strategy, space, module", [
    ("pretrain", "enas", "cell", "nas_core/strategies/rl.py"),
    ("search", "nao", "cell", "nas_core/strategies/rl.py"),
    ("pretrain", "snas", "cell", "nas_core/strategies/gdas.py"),
    ("pretrain", "stacnas", "cell", "nas_core/strategies/stacnas_clustering.py"),
    ("search", "hier_evolution", "hierarchical", "nas_core/strategies/evolution.py"),
    ("pretrain", "random", "layerwise", "nas_core/strategies/fbnet.py"),  # its supernet, chosen by name
    ("dcnas_sample", "dnas_cam", "global_cell", "nas_core/spaces/cell/genotype.py"),
    ("dcnas_cluster", "hier_evolution", "hierarchical", "nas_core/spaces/channel_ratio/network.py"),
    ("search", "fbnet", "layerwise", "nas_core/data/sources.py"),
    ("evaluate", "fbnet", "layerwise", "nas_core/data/subset.py"),
    ("retrain", "fbnet", "layerwise", "nas_core/train/confusion.py"),  # each finalist's gradient confusion
    ("retrain", "fbnet", "layerwise", "nas_core/config.py"),  # defaults in config models change results
])
def test_the_modules_found_missing_before_are_deps(stage, strategy, space, module):
    spec = {name: s for _, name, s in stages()}[stage]
    assert (REPO / module).resolve() in covered(spec, strategy, space)


def test_a_strategy_module_is_a_dep_only_of_the_runs_that_use_it():
    spec = {name: s for _, name, s in stages()}["pretrain"]
    assert (REPO / "nas_core/strategies/pnas.py").resolve() not in covered(spec, "enas", "cell")
    assert (REPO / "nas_core/strategies/pnas.py").resolve() not in covered(spec, "fbnet", "layerwise")


def test_retrain_depends_on_no_strategy_but_the_chosen_one():
    spec = {name: s for _, name, s in stages()}["retrain"]
    modules = {p.relative_to(REPO.resolve()).as_posix() for p in covered(spec, "fbnet", "layerwise")}
    strategies = {m for m in modules if m.startswith("nas_core/strategies/")}
    assert strategies <= {"nas_core/strategies/__init__.py", "nas_core/strategies/base.py",
                          "nas_core/strategies/data_parallel.py", "nas_core/strategies/fbnet.py"}, strategies


def commit_stage(project, stage: str) -> None:
    """A lock entry for ``stage`` without running it: its outputs as empty placeholders."""
    spec = yaml.safe_load((project / "dvc.yaml").read_text())["stages"][stage]
    for entry in (*spec.get("outs", []), *spec.get("metrics", []), *spec.get("plots", [])):
        path = project / (entry if isinstance(entry, str) else next(iter(entry)))
        if path.suffix:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("{}" if path.suffix == ".json" else "")
        else:
            path.mkdir(parents=True, exist_ok=True)
            (path / "placeholder").write_text("")
    sh("dvc", "commit", "--force", "--quiet", stage, cwd=project)


@pytest.mark.slow
def test_dvc_status_reports_pretrain_changed_after_an_edit_to_a_module_only_enas_imports(tmp_path):
    project = make_project(tmp_path / "project")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["search"].update(strategy="enas", space="cell")
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for stage in ("subset", "pretrain"):
        commit_stage(project, stage)
    assert "pretrain" not in sh("dvc", "status", "pretrain", cwd=project).stdout

    unrelated = project / "nas_core" / "strategies" / "pnas.py"
    unrelated.write_text(unrelated.read_text() + "\n# an edit\n")
    assert "pretrain" not in sh("dvc", "status", "pretrain", cwd=project).stdout

    controller = project / "nas_core" / "strategies" / "rl.py"
    controller.write_text(controller.read_text() + "\n# an edit\n")
    status = sh("dvc", "status", "pretrain", cwd=project).stdout
    assert "pretrain:" in status and ".deps/strategy/enas" in status, status
