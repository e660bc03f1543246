"""Runs every benchmark (bench/bench_*.py), prints one table per benchmark
and writes bench/results/<name>.json with the machine's description.

Usage: python bench/run.py [--quick] [name ...]
Each benchmark module exposes ``run(quick: bool = False) -> dict`` returning
``{"name": str, "rows": [dict, ...], "summary": dict}``; targets are stated as
ratios against a baseline measured in the same run.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def machine_info() -> dict:
    import psutil
    import torch

    return {"python": platform.python_version(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(HERE.parent))
    spec.loader.exec_module(module)
    return module


def table(rows: list[dict]) -> str:
    if not rows:
        return "(no rows)"
    cols = list(dict.fromkeys(k for row in rows for k in row))
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    cells = [[fmt(row.get(c, "")) for c in cols] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, widths))  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in widths]), *map(line, cells)])


def write_result(result: dict, info: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{result['name']}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({**result, "machine": info}, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


def report(result: dict) -> None:
    """A benchmark run on its own (``python bench/bench_X.py``): its table,
    its summary and the JSON file written."""
    print(table(result["rows"]))
    print(json.dumps(result["summary"], indent=2))
    print(f"-> {write_result(result, machine_info())}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (CI smoke run)")
    parser.add_argument("names", nargs="*", help="benchmark names (default: all)")
    args = parser.parse_args(argv)
    info = machine_info()
    paths = sorted(HERE.glob("bench_*.py"))
    if args.names:
        paths = [p for p in paths if p.stem.removeprefix("bench_") in args.names]
    for path in paths:
        start = time.perf_counter()
        result = load(path).run(quick=args.quick)
        result.setdefault("name", path.stem.removeprefix("bench_"))
        result["seconds"] = round(time.perf_counter() - start, 1)
        print(f"\n== {result['name']} ({result['seconds']} s) ==")
        print(table(result.get("rows", [])))
        for key, value in result.get("summary", {}).items():
            print(f"  {key}: {value}")
        print(f"  -> {write_result(result, info)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
