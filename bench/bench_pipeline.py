"""End-to-end `make run` work: wall time of `nasflow prepare` + `nasflow
pipeline` in a fresh clone of the repository's HEAD, with each stage's wall
time (the pipeline logs it on its MLflow parent run as
``stage_seconds.<stage>``), and peak memory (the venv of this run is reused,
with the clone's packages first on PYTHONPATH; installing is not timed).

``BENCH_PIPELINE_DATA`` picks the data:
- ``digits`` (default): the embedded default, params.yaml as committed.
  Target: under 600 s on 2 cores.
- ``mnist``: the 10,000 28x28 images of ../shared/datasets/mnist-t10k
  copied into the clone's ``data/mnist``, with the settings params.yaml
  documents for that size under ``spaces.layerwise`` (MNIST_OVERRIDES).
  Target: under 1,800 s on 2 cores. ``BENCH_MNIST_ROOT`` overrides where
  the IDX files are.
The ratio is wall time / target.

``--quick`` shortens the search and the retraining through the pipeline's
own ``--set`` overrides (FBNet: 4 supernet epochs, 1 of them warm-up;
retrain: 2 epochs). ``BENCH_PIPELINE_SOURCE=worktree`` runs the working
tree instead of HEAD (the clone gets every tracked or untracked,
not-ignored file as it is on disk, deleted files removed): for measuring
uncommitted changes.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUICK_OVERRIDES = {"strategies.fbnet.epochs": 4, "strategies.fbnet.warmup_epochs": 1, "retrain.epochs": 2}
SOURCES = ("head", "worktree")
MNIST_ROOT = Path(os.environ.get("BENCH_MNIST_ROOT", REPO.parent / "shared" / "datasets" / "mnist-t10k"))
#: params.yaml's settings for a 10,000-image 28x28 set (the comment under spaces.layerwise)
MNIST_OVERRIDES = {"data.source": "mnist", "data.root": "data/mnist", "subset.fraction": 0.25,
                   "dcnas_features.epochs": [1, 4, 8, 12, 16], "dcnas_sample.num_samples": 1000,
                   "retrain.epochs": 5}
DATA = {"digits": {"name": "pipeline", "target_seconds": 600.0, "overrides": {}},
        "mnist": {"name": "pipeline_mnist", "target_seconds": 1800.0, "overrides": MNIST_OVERRIDES}}


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


def data_setting() -> dict:
    value = os.environ.get("BENCH_PIPELINE_DATA", "digits")
    if value not in DATA:
        raise ValueError(f"BENCH_PIPELINE_DATA = {value!r}: allowed {', '.join(DATA)}")
    return {"data": value, **DATA[value]}


def bring_data(clone: Path, setting: dict) -> None:
    """MNIST: the IDX files under the clone's data root, as a user brings them."""
    if setting["data"] != "mnist":
        return
    files = sorted(MNIST_ROOT.glob("t10k-*"))
    if not files:
        raise FileNotFoundError(f"no t10k-* IDX files under {MNIST_ROOT}")
    target = clone / MNIST_OVERRIDES["data.root"]
    target.mkdir(parents=True, exist_ok=True)
    for path in files:
        shutil.copy2(path, target / path.name)


def stage_seconds(clone: Path) -> dict[str, float]:
    """Each stage's wall time, from the pipeline's MLflow parent run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{clone / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    (parent,) = client.search_runs(experiments, "tags.`nasflow.kind` = 'pipeline'")
    prefix = "stage_seconds."
    return {k.removeprefix(prefix): v for k, v in parent.data.metrics.items() if k.startswith(prefix)}


def accuracies(clone: Path) -> dict[str, float]:
    """Test accuracy of N*, of the strategy's own genotype and of the random
    control (metrics/retrain.json), so a faster setting shows what it cost."""
    metrics = json.loads((clone / "metrics" / "retrain.json").read_text())
    keys = ("chosen_test_acc", "baseline_test_acc", "random_test_acc")
    return {k: round(float(metrics[k]), 4) for k in keys if k in metrics}


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


def set_args(overrides: dict) -> list[str]:
    """``overrides`` as the pipeline's ``--set KEY=VALUE`` arguments."""
    return [arg for key, value in overrides.items() for arg in ("--set", f"{key}={json.dumps(value)}")]


def run(quick: bool = False) -> dict:
    from_tree, setting = source(), data_setting()
    chosen = {**setting["overrides"], **(QUICK_OVERRIDES if quick else {})}
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "nasflow"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        if from_tree == "worktree":
            overlay_worktree(clone)
        bring_data(clone, setting)
        env = clone_env(clone)
        rows = [{"step": "prepare", "seconds": round(timed(["nasflow", "prepare"], clone, env), 1)}]
        rows.append({"step": "pipeline",
                     "seconds": round(timed(["nasflow", "pipeline", *set_args(chosen)], clone, env), 1)})
        stages, accuracy = stage_seconds(clone), accuracies(clone)
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    total = sum(r["seconds"] for r in rows)
    rows += [{"step": f"  stage {name}", "seconds": round(sec, 1)} for name, sec in stages.items()]
    rows.append({"step": "total", "seconds": round(total, 1)})
    target = setting["target_seconds"]
    return {"name": setting["name"], "rows": rows,
            "summary": {"data": setting["data"], "wall_seconds": round(total, 1), "target_seconds": target,
                        "ratio_to_target": round(total / target, 3), "stage_seconds": stages, **accuracy,
                        "peak_child_rss_mib": round(peak_mib, 1), "quick": quick, "source": from_tree,
                        "overrides": chosen}}


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "bench"))
    from run import main

    sys.exit(main([*sys.argv[1:], "pipeline"]))
