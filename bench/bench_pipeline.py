"""End-to-end `make run` work on the embedded default: wall time and peak
memory of `nasflow prepare` + `nasflow pipeline` in a fresh clone of the
repository's HEAD (the venv of this run is reused; installing is not timed).
Target: under 600 s on 2 cores; the ratio is wall time / target.
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 600.0


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def run(quick: bool = False) -> dict:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    overrides = ["--set", "pretrain.epochs=4", "--set", "retrain.epochs=2"] if quick else []
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "nasflow"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        rows = [{"step": "prepare", "seconds": round(timed(["nasflow", "prepare"], clone, env), 1)}]
        rows.append({"step": "pipeline", "seconds": round(timed(["nasflow", "pipeline", *overrides], clone, env), 1)})
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    total = sum(r["seconds"] for r in rows)
    rows.append({"step": "total", "seconds": round(total, 1)})
    return {"name": "pipeline", "rows": rows,
            "summary": {"wall_seconds": round(total, 1), "target_seconds": TARGET_SECONDS,
                        "ratio_to_target": round(total / TARGET_SECONDS, 3),
                        "peak_child_rss_mib": round(peak_mib, 1), "quick": quick}}


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "bench"))
    from run import main

    sys.exit(main([*sys.argv[1:], "pipeline"]))
