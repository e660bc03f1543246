"""A LiveRun whose reporter, after reporting epoch 1 (the real code path),
holds the task until the test creates a gate file: the test can then look
at the MLflow store while the task is provably still running. Importable
by name (tests.tasks.live_gate), so it also crosses into Dask workers."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, TextIO

from tasks.live import EpochReporter, LiveRun

GATE_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class GatedLive(LiveRun):
    gate: str = ""

    def reporter(self, stream: Optional[TextIO] = None) -> EpochReporter:
        return GatedReporter(self, stream)


class GatedReporter(EpochReporter):
    def __call__(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        super().__call__(epoch, metrics)
        if epoch != 1:
            return
        deadline = time.monotonic() + GATE_TIMEOUT_S
        while not Path(self.live.gate).exists():  # type: ignore[attr-defined]
            if time.monotonic() > deadline:
                raise TimeoutError(f"gate {self.live.gate} never opened")  # type: ignore[attr-defined]
            time.sleep(0.05)
