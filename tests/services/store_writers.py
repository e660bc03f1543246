"""A writer that touches a tracking store the way a stage does
(tasks.tracking.RunLogger): test_store_first_use.py starts it in several
processes and on Dask workers, all released by one gate file at once."""
from __future__ import annotations

import sys
import time
from pathlib import Path

EXPERIMENT = "first-use"
STEPS = 25


def write_run(uri: str, name: str, gate: str) -> str:
    """Say ready, wait for the gate's ``go`` file, then create run ``name``
    and log ``loss`` and ``acc`` for STEPS steps; returns the run id."""
    from tasks.tracking import RunLogger

    gate_dir = Path(gate)
    (gate_dir / f"ready-{name}").touch()
    deadline = time.monotonic() + 300
    while not (gate_dir / "go").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name}: no go signal in {gate_dir}")
        time.sleep(0.002)
    log = RunLogger.start(uri, EXPERIMENT, name, gate_dir)
    for step in range(STEPS):
        log.log_metrics({"loss": 1.0 / (step + 1), "acc": step / STEPS}, step=step)
    log.end("FINISHED")
    return log.run_id


if __name__ == "__main__":
    print(write_run(*sys.argv[1:4]))
