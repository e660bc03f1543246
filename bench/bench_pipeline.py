"""End-to-end `make run` work on the embedded default: wall time and peak
memory of `nasflow prepare` + `nasflow pipeline` in a fresh clone of the
repository's HEAD (the venv of this run is reused, with the clone's
packages first on PYTHONPATH; installing is not timed). Target: under
600 s on 2 cores; the ratio is wall time / target.

``--quick`` shortens the search and the retraining through the pipeline's
own ``--set`` overrides (FBNet: 4 supernet epochs, 1 of them warm-up;
retrain: 2 epochs). ``BENCH_PIPELINE_SOURCE=worktree`` runs the working
tree instead of HEAD (the clone gets every tracked or untracked,
not-ignored file as it is on disk, deleted files removed): for measuring
uncommitted changes.
"""
from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 600.0
QUICK_OVERRIDES = {"strategies.fbnet.epochs": 4, "strategies.fbnet.warmup_epochs": 1, "retrain.epochs": 2}
SOURCES = ("head", "worktree")


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def clone_env(clone: Path) -> dict[str, str]:
    """The tools beside this interpreter on PATH, and the clone's packages
    first on PYTHONPATH: the editable install of this venv would otherwise
    import this repository's code in place of the clone's."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join(p for p in [str(clone), os.environ.get("PYTHONPATH", "")] if p),
           "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    found = subprocess.run([sys.executable, "-c", "import flows; print(flows.__file__)"], cwd=clone, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    if not Path(found).resolve().is_relative_to(clone.resolve()):
        raise RuntimeError(f"the clone would run {found}, not its own code")
    return env


def source() -> str:
    value = os.environ.get("BENCH_PIPELINE_SOURCE", "head")
    if value not in SOURCES:
        raise ValueError(f"BENCH_PIPELINE_SOURCE = {value!r}: allowed {', '.join(SOURCES)}")
    return value


def git_files(repo: Path, *options: str) -> set[str]:
    out = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", *options], check=True, capture_output=True)
    return {name for name in out.stdout.decode().split("\0") if name}


def overlay_worktree(clone: Path) -> None:
    """Make the clone's files those of this repository's working tree."""
    wanted = {f for f in git_files(REPO, "--cached", "--others", "--exclude-standard") if (REPO / f).is_file()}
    for name in git_files(clone) - wanted:
        (clone / name).unlink(missing_ok=True)
    for name in wanted:
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, clone / name)


def overrides(quick: bool) -> list[str]:
    return [arg for key, value in QUICK_OVERRIDES.items() for arg in ("--set", f"{key}={value}")] if quick else []


def run(quick: bool = False) -> dict:
    from_tree = source()
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "nasflow"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        if from_tree == "worktree":
            overlay_worktree(clone)
        env = clone_env(clone)
        rows = [{"step": "prepare", "seconds": round(timed(["nasflow", "prepare"], clone, env), 1)}]
        rows.append({"step": "pipeline",
                     "seconds": round(timed(["nasflow", "pipeline", *overrides(quick)], clone, env), 1)})
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    total = sum(r["seconds"] for r in rows)
    rows.append({"step": "total", "seconds": round(total, 1)})
    return {"name": "pipeline", "rows": rows,
            "summary": {"wall_seconds": round(total, 1), "target_seconds": TARGET_SECONDS,
                        "ratio_to_target": round(total / TARGET_SECONDS, 3),
                        "peak_child_rss_mib": round(peak_mib, 1), "quick": quick, "source": from_tree,
                        "overrides": QUICK_OVERRIDES if quick else {}}}


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "bench"))
    from run import main

    sys.exit(main([*sys.argv[1:], "pipeline"]))
