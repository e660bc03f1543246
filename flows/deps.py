"""The code deps of every dvc.yaml stage, computed from the imports
(``nasflow deps`` writes them, ``nasflow deps --check`` says what is stale).

What a stage's result depends on is the code it runs. For stage ``s`` that
is the transitive closure of the project-local imports (every ``import``,
those inside functions included; importing ``a.b.c`` also runs the
``__init__`` of ``a`` and ``a.b``) of

* its task module ``tasks/stages/<s>.py`` and ``nas_core/runtime.py`` (seeding,
  device and threads, set by the runner around every stage);
* where the stage reads the choice (its dvc.yaml ``params`` name ``search``,
  ``search.strategy`` or ``strategies``): the chosen strategy's module and
  the modules of the strategies it runs by name (a multi-trial search's
  ``supernet``: :meth:`SearchStrategy.delegates`);
* where the stage reads ``search`` or ``search.space``: the chosen space's
  package.

Two kinds of import edge are not followed. From a registry's package
``__init__`` (``nas_core/strategies/__init__.py``,
``nas_core/spaces/__init__.py``) to the modules it imports only to register
them: their code runs only when chosen; without the cut, every stage would
depend on every strategy. And from a package ``__init__`` that a module
reaches only as the parent of what it imports (``from
nas_core.supernet.cell import X`` runs ``nas_core/supernet/__init__.py``,
which imports every supernet): the ``__init__`` file is a dep, the modules
it re-exports are not, since the importer uses none of them. Importing a
package itself (``from nas_core.evaluators import EVALUATORS``) follows its
``__init__``.

DVC templates a dep on a param only as a string (``${search.strategy}``), so
the per-strategy and per-space closures cannot be lists in dvc.yaml. They
are folders of relative symbolic links, ``.deps/strategy/<name>/`` and
``.deps/space/<name>/``, mirroring the repo paths of the files in the
closure; DVC hashes the files the links point at, so ``dvc status`` sees an
edit to any of them. What every strategy's (space's) closure holds is left
out of the folders and listed in the stage itself. A stage lists
``.deps/strategy/${search.strategy}`` and the files its task module
reaches.

The top-level modules (``config.py``, ``io.py``, ``registry.py``,
``sections.py``, ``runtime.py``) are deps wherever the closure reaches them
(every stage): a default in a config model changes results as a value in
params.yaml does. Non-code deps (data, artifacts of earlier stages) are
kept as written.
"""
from __future__ import annotations

import ast
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator

from ruamel.yaml import YAML

from nas_core.io import atomic_dir, write_text

PACKAGES = ("nas_core", "tasks", "flows")
LINKS = Path(".deps")
PIPELINES = ("dvc.yaml", "ablation/dvc.yaml")
STAGE_ROOTS = ("nas_core/runtime.py",)
STRATEGY_PACKAGE = "nas_core.strategies"
SPACE_PACKAGE = "nas_core.spaces"
STRATEGY_KEYS = ("search", "search.strategy", "strategies")
SPACE_KEYS = ("search", "search.space")
STRATEGY_DEP = f"{LINKS.as_posix()}/strategy/${{search.strategy}}"
SPACE_DEP = f"{LINKS.as_posix()}/space/${{search.space}}"


def _module_file(root: Path, dotted: str) -> Path | None:
    base = root.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_of(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1])


def _imported_names(path: Path, root: Path) -> Iterator[tuple[str, bool]]:
    """(dotted name, explicit) for what an ``import`` anywhere in ``path``
    may load: the module and each name taken from it (it may be a
    submodule) are explicit; the packages above them are not (Python runs
    their ``__init__``, but the importer uses none of what it re-exports)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _package_of(root, path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            parts = name.split(".")
            yield from ((".".join(parts[:i]), False) for i in range(1, len(parts)))
            yield name, True


@dataclass
class ImportGraph:
    """Project-local import edges. Two kinds are not followed: from a
    package ``__init__`` reached only as the parent of an imported module
    (its file is a dep, what it imports is not), and from an
    ``aggregator`` (a registry's package ``__init__``) to a ``plugin``."""

    root: Path
    plugins: frozenset[Path]
    aggregators: frozenset[Path]
    _parsed: dict[Path, dict[Path, bool]] = field(default_factory=dict)

    def imports(self, path: Path) -> dict[Path, bool]:
        """The files ``path`` imports -> whether to follow their imports
        (each file parsed once per graph)."""
        if path not in self._parsed:
            self._parsed[path] = self._read_imports(path)
        return self._parsed[path]

    def _read_imports(self, path: Path) -> dict[Path, bool]:
        found: dict[Path, bool] = {}
        for name, explicit in _imported_names(path, self.root):
            file = _module_file(self.root, name) if name.split(".")[0] in PACKAGES else None
            if file is not None and file != path and not (path in self.aggregators and file in self.plugins):
                found[file] = found.get(file, False) or explicit or file.name != "__init__.py"
        return found

    def closure(self, roots: Iterable[Path]) -> set[Path]:
        seen: set[Path] = set()
        followed: set[Path] = set()
        todo = [(Path(r), True) for r in roots]
        while todo:
            path, follow = todo.pop()
            seen.add(path)
            if follow and path not in followed:
                followed.add(path)
                todo.extend((f, deep) for f, deep in self.imports(path).items() if f not in followed)
        return seen


def _unit(root: Path, registry_package: str, module: str) -> Path:
    """The file or package directly under ``registry_package`` that defines
    ``module`` (a strategy's module, a space's package)."""
    parts = registry_package.split(".")
    if module.split(".")[: len(parts)] != parts or module.count(".") < len(parts):
        raise ValueError(f"{module} is not inside {registry_package}: dvc.yaml finds a registered "
                         f"{parts[-1][:-1]} by its name in {registry_package.replace('.', '/')}/")
    return root.joinpath(*module.split(".")[: len(parts) + 1])


def _strategy_files(root: Path) -> dict[str, Path]:
    from nas_core.strategies import STRATEGIES

    units = {n: _unit(root, STRATEGY_PACKAGE, STRATEGIES.get(n).__module__) for n in STRATEGIES.names()}
    return {n: u.with_suffix(".py") for n, u in units.items()}


def _space_files(root: Path) -> dict[str, list[Path]]:
    from nas_core.spaces import SPACES

    units = {n: _unit(root, SPACE_PACKAGE, SPACES.get(n).__module__) for n in SPACES.names()}
    return {n: sorted(u.rglob("*.py")) for n, u in units.items()}


class CodeDeps:
    """The closures of one checkout (``root``) over the registries."""

    def __init__(self, root: Path) -> None:
        from nas_core.strategies import STRATEGIES

        self.root = root.resolve()
        self.strategies = _strategy_files(self.root)
        self.spaces = _space_files(self.root)
        self._check_layout()
        plugins = {*self.strategies.values(), *(f for files in self.spaces.values() for f in files)}
        aggregators = {_module_file(self.root, p) for p in (STRATEGY_PACKAGE, SPACE_PACKAGE)}
        self.graph = ImportGraph(self.root, frozenset(plugins), frozenset(a for a in aggregators if a))
        self._delegates = {name: STRATEGIES.get(name).delegates() for name in STRATEGIES.names()}

    def _check_layout(self) -> None:
        """Every registered strategy and space has its own file or package."""
        for name, path in self.strategies.items():
            if not path.is_file():
                raise ValueError(f"strategy {name!r}: no module {path} (a strategy is a module of "
                                 f"{STRATEGY_PACKAGE})")
        for name, files in self.spaces.items():
            if not files:
                raise ValueError(f"space {name!r}: no package in {SPACE_PACKAGE} holds it")

    def rel(self, paths: Iterable[Path]) -> list[str]:
        """Repo paths of ``paths``, empty files left out (DVC warns about an
        empty dep; one that gains code is then missing, and --check says so)."""
        return sorted(p.relative_to(self.root).as_posix() for p in paths if p.stat().st_size > 0)

    def strategy_closure(self, name: str) -> set[Path]:
        roots = [self.strategies[n] for n in (name, *self._delegates[name])]
        return self.graph.closure(roots)

    def space_closure(self, name: str) -> set[Path]:
        return self.graph.closure(self.spaces[name])

    def stage_closure(self, stage: str) -> set[Path]:
        roots = [self.root / "tasks" / "stages" / f"{stage}.py", *(self.root / r for r in STAGE_ROOTS)]
        return self.graph.closure(roots)

    @cached_property
    def strategy_core(self) -> set[Path]:
        """What every strategy's closure holds (listed in dvc.yaml itself)."""
        return set.intersection(*(self.strategy_closure(n) for n in self.strategies))

    @cached_property
    def space_core(self) -> set[Path]:
        return set.intersection(*(self.space_closure(n) for n in self.spaces))

    def links(self) -> dict[str, list[str]]:
        """``.deps/<kind>/<name>`` -> the repo paths it mirrors: the closure
        less what every strategy (space) imports."""
        out = {f"strategy/{n}": self.rel(self.strategy_closure(n) - self.strategy_core) for n in self.strategies}
        out.update({f"space/{n}": self.rel(self.space_closure(n) - self.space_core) for n in self.spaces})
        return out


def _keys(entries: list) -> list[str]:
    out: list[str] = []
    for entry in entries or []:
        out.extend([entry] if isinstance(entry, str) else list(entry))  # a mapping names a params file
    return out


def _is_code(dep: str) -> bool:
    return dep.split("/")[0] in (*PACKAGES, LINKS.as_posix())


def stage_code_deps(deps: CodeDeps, stage: str, params: list) -> list[str]:
    """The code deps dvc.yaml lists for ``stage`` (module docstring)."""
    keys = _keys(params)
    files, links = deps.stage_closure(stage), []
    if any(k in STRATEGY_KEYS or k.startswith("strategies.") for k in keys):
        files, links = files | deps.strategy_core, [*links, STRATEGY_DEP]
    if any(k in SPACE_KEYS for k in keys):
        files, links = files | deps.space_core, [*links, SPACE_DEP]
    return [*deps.rel(files), *links]


def _yaml() -> YAML:
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 120
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def render_pipeline(deps: CodeDeps, path: Path) -> str:
    """``path`` (a dvc.yaml) with every stage's code deps recomputed."""
    import io

    yaml = _yaml()
    doc = yaml.load(path.read_text())
    for stage, spec in doc.get("stages", {}).items():
        kept = [d for d in spec.get("deps", []) if not (isinstance(d, str) and _is_code(d))]
        spec["deps"] = [*kept, *stage_code_deps(deps, stage, spec.get("params", []))]
    buf = io.StringIO()
    yaml.dump(doc, buf)
    return buf.getvalue()


def current_links(root: Path) -> dict[str, list[str]]:
    """What ``.deps`` holds now: link folder -> the repo paths linked."""
    base = root / LINKS
    out: dict[str, list[str]] = {}
    for folder in sorted(p for p in base.glob("*/*") if p.is_dir()):
        out[folder.relative_to(base).as_posix()] = sorted(
            f.relative_to(folder).as_posix() for f in folder.rglob("*") if f.is_symlink())
    return out


def write_links(root: Path, wanted: dict[str, list[str]]) -> None:
    """``.deps`` replaced whole by ``wanted`` (staged beside it, at the same
    depth, so the relative link targets hold once it is renamed)."""
    base = root / LINKS
    with atomic_dir(base) as staging:
        for folder, files in wanted.items():
            for rel in files:
                link = staging / folder / rel
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(os.path.relpath(root / rel, (base / folder / rel).parent))


def stale(root: Path) -> list[str]:
    """What ``nasflow deps`` would change, one line each (empty: up to date)."""
    deps = CodeDeps(root)
    problems = []
    for name in PIPELINES:
        path = root / name
        wanted_text = render_pipeline(deps, path) if path.is_file() else None
        if wanted_text is not None and wanted_text != path.read_text():
            problems += [f"{name}: stage {line}" for line in _deps_diff(path, wanted_text)]
    wanted, have = deps.links(), current_links(root)
    for folder in sorted(set(wanted) | set(have)):
        missing = sorted(set(wanted.get(folder, [])) - set(have.get(folder, [])))
        extra = sorted(set(have.get(folder, [])) - set(wanted.get(folder, [])))
        problems += [f"{LINKS}/{folder}: missing {m}" for m in missing]
        problems += [f"{LINKS}/{folder}: not imported {e}" for e in extra]
    return problems


def _deps_diff(path: Path, wanted: str) -> list[str]:
    yaml = _yaml()
    old = yaml.load(path.read_text()).get("stages", {})
    new = yaml.load(wanted).get("stages", {})
    out = []
    for stage, spec in new.items():
        before = set(map(str, old.get(stage, {}).get("deps", [])))
        after = set(map(str, spec.get("deps", [])))
        out += [f"{stage}: missing dep {d}" for d in sorted(after - before)]
        out += [f"{stage}: dep no longer imported {d}" for d in sorted(before - after)]
    return out or ["layout differs (run `nasflow deps`)"]


def write(root: Path) -> list[str]:
    """Rewrite the pipelines' code deps and the link folders; the files changed."""
    deps = CodeDeps(root)
    changed = []
    for name in PIPELINES:
        path = root / name
        if path.is_file():
            text = render_pipeline(deps, path)
            if text != path.read_text():
                write_text(path, text)
                changed.append(name)
    wanted = deps.links()
    if wanted != current_links(root):
        write_links(root, wanted)
        changed.append(LINKS.as_posix())
    return changed


def expand(dep: str, strategy: str, space: str, root: Path) -> set[Path]:
    """The files a templated dep names for one (strategy, space) pair,
    links resolved (what DVC hashes)."""
    path = root / PurePosixPath(dep.replace("${search.strategy}", strategy).replace("${search.space}", space))
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    return {p.resolve() for p in files if p.exists()}
