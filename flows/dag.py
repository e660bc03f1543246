"""The stage DAG, read from dvc.yaml (its single definition)."""
from __future__ import annotations

from graphlib import TopologicalSorter
from pathlib import Path, PurePosixPath

import yaml


def _paths(entries: list) -> list[str]:
    """dvc.yaml lists entries as strings or one-key mappings (with options)."""
    out = []
    for entry in entries or []:
        out.extend(entry.keys() if isinstance(entry, dict) else [entry])
    return [str(PurePosixPath(p)) for p in out]


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def read_dag(dvc_yaml: Path) -> dict[str, set[str]]:
    """stage -> the stages it depends on (a dep inside another's out)."""
    stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {})
    outs = {name: _paths(s.get("outs", [])) for name, s in stages.items()}
    graph: dict[str, set[str]] = {}
    for name, spec in stages.items():
        deps = _paths(spec.get("deps", []))
        graph[name] = {other for other, o in outs.items() if other != name
                       and any(_inside(d, out) for d in deps for out in o)}
    return graph


def stage_order(dvc_yaml: Path, targets: list[str] | None = None) -> list[str]:
    """Topological order of the stages (restricted to ``targets`` and their
    upstream stages when given)."""
    graph = read_dag(dvc_yaml)
    if targets:
        unknown = [t for t in targets if t not in graph]
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}: dvc.yaml has {sorted(graph)}")
        keep: set[str] = set()
        todo = list(targets)
        while todo:
            stage = todo.pop()
            if stage not in keep:
                keep.add(stage)
                todo.extend(graph[stage])
        graph = {s: d & keep for s, d in graph.items() if s in keep}
    return list(TopologicalSorter(graph).static_order())
