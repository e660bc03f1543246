"""The ``nasflow`` command. Bad params or data exit with code 2 and one
line naming the key or file, the value and what is allowed."""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from flows.exit_codes import exit_code
from flows.options import add_set_option, add_study_options
from nas_core.config import load_params, parse_overrides


def cmd_stage(args: argparse.Namespace) -> int:
    from flows.fanout import fan_out
    from tasks.runner import run_stage

    metrics = run_stage(args.name, args.params, fan_out=fan_out)
    print(f"[{args.name}] done: metrics/{args.name}.json ({len(metrics)} values)")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from nas_core.data import load_source, make_splits

    params = load_params(args.params, parse_overrides(args.overrides))
    source = load_source(params.data, Path.cwd())
    splits = make_splits(source.train_targets, source.test_targets, params.data, params.subset, params.runtime.seed)
    sizes = ", ".join(f"{k} {len(v)}" for k, v in splits.indices.items())
    shape = "x".join(map(str, source.input_shape))
    print(f"{args.params}{' with ' + ', '.join(args.overrides) if args.overrides else ''}: OK")
    print(f"data: {source.name} at {source.root}: {len(source.train_targets)} training images, "
          f"{source.num_classes} classes, input {shape}")
    print(f"splits: {sizes}")
    for line in fit_warnings(params, source.input_shape):
        print(f"nasflow: warning: {line}", file=sys.stderr)
    return 0


def fit_warnings(params: Any, input_shape: tuple[int, ...]) -> list[str]:
    """Settings of the chosen space that do not suit the data (still valid,
    so a warning, not an error): the ``fit_warnings(input_shape)`` of its
    config section, where the space's config defines one."""
    from tasks.nas import chosen_space_section

    check = getattr(chosen_space_section(params), "fit_warnings", None)
    return list(check(tuple(input_shape))) if check is not None else []


def registries() -> dict[str, Sequence[str]]:
    """Every name params.yaml can use, by registry: dataset sources, search
    spaces, each space's named choices (op tables, op sets) and strategies
    with the spaces they search, evaluators."""
    from nas_core.data import SOURCES
    from nas_core.spaces import SPACES
    from nas_core.strategies import STRATEGIES

    out: dict[str, Sequence[str]] = {"dataset sources": SOURCES.names(), "search spaces (search.space)": SPACES.names()}
    for name in SPACES.names():
        for title, registry in getattr(SPACES.get(name), "registries", dict)().items():
            out[f"{name} {title}"] = registry.names()
    out["strategies (search.strategy)"] = [
        f"{n} ({STRATEGIES.get(n).kind}; spaces: {', '.join(STRATEGIES.get(n).spaces)})" for n in STRATEGIES.names()]
    from nas_core.evaluators import EVALUATORS

    out["evaluators (strategies.<multi-trial>.evaluator, evaluate.evaluator)"] = EVALUATORS.names()
    return out


def cmd_list(args: argparse.Namespace) -> int:
    for title, names in registries().items():
        print(f"{title}: {', '.join(names)}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from nas_core.data import materialize_digits

    params = load_params(args.params)
    if params.data.source != "digits":
        print(f"data.source = {params.data.source}: nothing to prepare (bring the files, `dvc add data`)")
        return 0
    root = Path(params.data.root)
    folder = materialize_digits(root)
    print(f"wrote scikit-learn's digits to {folder}")
    pin_data(root)
    return 0


def pin_data(root: Path) -> None:
    """Put freshly written data into the DVC cache: the bytes are the same on
    every machine, so data.dvc keeps its hash and `dvc status` stays clean."""
    import subprocess

    from flows.tools import tools_env

    pin = root.with_name(root.name + ".dvc")
    if Path(".dvc").is_dir() and pin.is_file():
        subprocess.run(["dvc", "commit", "--force", "--quiet", str(pin)], check=True, env=tools_env())


def cmd_deps(args: argparse.Namespace) -> int:
    """Write (or with ``--check`` verify) every stage's code deps and the
    ``.deps`` link folders from the imports (flows.deps)."""
    from flows import deps

    root = Path.cwd()
    if args.check:
        problems = deps.stale(root)
        for line in problems:
            print(f"nasflow: stale code deps: {line}", file=sys.stderr)
        if problems:
            print("nasflow: run `nasflow deps` and commit the result", file=sys.stderr)
        return 1 if problems else 0
    changed = deps.write(root)
    print(f"code deps: rewrote {', '.join(changed)}" if changed else "code deps: up to date")
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    from flows.pipeline import main as pipeline_main

    return pipeline_main(args)


def cmd_ablation(args: argparse.Namespace) -> int:
    return int(importlib.import_module("flows.ablation").run(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nasflow", description="Neural-architecture-search pipeline")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
        p.set_defaults(fn=fn)
        return p

    add("stage", cmd_stage, "run one dvc.yaml stage").add_argument("name")
    add_set_option(add("check", cmd_check, "validate params and data"), "checked, not written")
    add("list", cmd_list, "list registered datasets, spaces, ops and strategies")
    add("prepare", cmd_prepare, "write the embedded default dataset under data/")
    add("deps", cmd_deps, "write every stage's code deps (dvc.yaml, .deps/) from the imports").add_argument(
        "--check", action="store_true", help="only report stale deps (exit 1 if any)")
    pipe = add("pipeline", cmd_pipeline, "run the whole DAG as the nas-pipeline Prefect flow")
    add_set_option(pipe, "written to the params file so DVC sees it")
    pipe.add_argument("--stages", nargs="*", default=None, help="run only up to these stages")
    add_study_options(add("ablation", cmd_ablation, "run the channel-ratio Table-1 ablation flow"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args([a for a in (sys.argv[1:] if argv is None else argv) if a != "--"])
    try:
        return args.fn(args)
    except Exception as exc:
        code = exit_code(exc)
        if code is None:
            raise
        print(f"nasflow: error: {exc}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
