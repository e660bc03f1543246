"""Live progress from fanned-out training tasks: each epoch's metrics go to
the task's nested MLflow run as the task runs, and one progress line per
epoch goes to the stage log, in a thread of the stage process or in a Dask
(or Ray) worker process alike.

The caller (the stage, in its own thread) creates the nested run as before
(``ctx.log.child``) and describes it with a :class:`LiveRun`: a frozen,
picklable value (tracking URI, run id, task name, epoch count, metric
prefix, stage name) that travels with the task's item. The worker builds an
:class:`EpochReporter` from it (``live.reporter()``) and calls it after each
epoch with ``(epoch, metrics)``, the signature of ``nas_core.train.fit``'s
``on_epoch`` hook, so nas_core never sees MLflow. The reporter

* logs the epoch's numeric metrics (name = prefix + key, step = epoch)
  through its own client of the tracking URI (one client per URI
  and process), and records the epoch in :attr:`EpochReporter.logged_epochs`;
* writes ``[stage] name: epoch e/E train_loss .. train_acc .. val_acc ..
  (s/epoch, ETA)`` to stderr, flushed, which is the stage log: the stage
  process's own stderr for the thread pool, and the inherited stderr of a
  LocalCluster's worker processes (a worker of a cluster started elsewhere
  writes to that worker's log instead).

The caller returns :attr:`EpochReporter.logged_epochs` with the task's result
and, after the fan-out, logs only the epochs that were not logged live
(:func:`unlogged_rows`), so no metric is written twice and none is lost when
live logging fails: a failing MLflow call is reported once on the progress
line and live logging stops for that task (training goes on). Under
torchrun only rank 0 reports. Workers on other machines need a tracking
URI they can reach (an MLflow server, not a local sqlite file).
"""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, TextIO

from mlflow.entities import Metric

from nas_core.train.distributed import is_main
from tasks.tracking import open_client

#: Metrics shown on the progress line, in this order, when present.
SHOWN = ("train_loss", "loss", "train_acc", "acc", "val_loss", "val_acc")

_CLIENTS: dict[str, Any] = {}
_CLIENTS_LOCK = threading.Lock()


@dataclass(frozen=True)
class LiveRun:
    """Where a worker reports the epochs of one training task. ``tracking_uri``
    / ``run_id`` None: progress lines only. ``prefix`` is put before every
    metric name (several tasks sharing one run, e.g. ``cand0_``)."""

    tracking_uri: Optional[str]
    run_id: Optional[str]
    name: str
    epochs: int
    prefix: str = ""
    stage: str = ""

    @classmethod
    def for_run(cls, log: Any, name: str, epochs: int, prefix: str = "", stage: str = "") -> "LiveRun":
        """The LiveRun of a caller's run logger (tasks.tracking.RunLogger).
        A logger without a real MLflow client (a torchrun replica's) gives a
        LiveRun without tracking."""
        uri = getattr(getattr(log, "client", None), "tracking_uri", None)
        run_id = getattr(log, "run_id", None)
        if not isinstance(uri, str) or not isinstance(run_id, str):
            uri = run_id = None
        return cls(uri, run_id, name, int(epochs), prefix, stage)

    def reporter(self, stream: Optional[TextIO] = None) -> "EpochReporter":
        """A reporter for this task, built in the worker just before training."""
        return EpochReporter(self, stream)


def epoch_metrics(row: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The loggable metrics of one history row: numeric values except the
    epoch itself, names prefixed."""
    return {f"{prefix}{k}": float(v) for k, v in row.items()
            if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)}


def unlogged_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The history rows of a task result whose epoch was not logged live
    (``result["live_epochs"]``)."""
    done = set(result.get("live_epochs") or ())
    return [row for row in result["history"] if int(row["epoch"]) not in done]


def epoch_callback(live: Optional[LiveRun]) -> Optional["EpochReporter"]:
    """``live.reporter()``, or None without a LiveRun (for ``on_epoch``)."""
    return live.reporter() if live is not None else None


def client_for(uri: str) -> Any:
    """One client per tracking URI and process, opened through
    tasks.tracking.open_client (a worker may be the first process to touch
    the store)."""
    with _CLIENTS_LOCK:
        if uri not in _CLIENTS:
            _CLIENTS[uri] = open_client(uri)
        return _CLIENTS[uri]


class EpochReporter:
    """Called as ``reporter(epoch, metrics)`` after each epoch (1-based) of
    one task; see the module docstring."""

    def __init__(self, live: LiveRun, stream: Optional[TextIO] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.live, self.stream, self.clock = live, stream, clock
        self.started = clock()
        self.logged_epochs: list[int] = []
        self.tracking = live.tracking_uri is not None and live.run_id is not None
        self._keys: set[str] = set()

    @property
    def logged_keys(self) -> set[str]:
        """The (unprefixed) metric names logged live for every epoch so far;
        empty once live logging has failed (then everything is logged when
        the task ends)."""
        return set(self._keys) if self.tracking else set()

    def __call__(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        if not is_main():
            return
        note = self._log(epoch, metrics) if self.tracking else ""
        self._write(progress_line(self.live, epoch, metrics, self.clock() - self.started) + note)

    def _log(self, epoch: int, metrics: Mapping[str, Any]) -> str:
        now = int(time.time() * 1000)
        items = [Metric(k, v, now, int(epoch)) for k, v in epoch_metrics(metrics, self.live.prefix).items()]
        try:
            client_for(self.live.tracking_uri).log_batch(self.live.run_id, metrics=items)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - any tracking failure: report once, log at the end instead
            self.tracking = False
            return f" [live MLflow logging off: {type(exc).__name__}: {str(exc)[:200]}; logged when the task ends]"
        self.logged_epochs.append(int(epoch))
        self._keys.update(epoch_metrics(metrics))
        return ""

    def _write(self, line: str) -> None:
        stream = self.stream or sys.stderr
        stream.write(line + "\n")
        stream.flush()


def progress_line(live: LiveRun, epoch: int, metrics: Mapping[str, Any], elapsed: float) -> str:
    """``[stage] name: epoch e/E <metrics> (x s/epoch, ETA t)``."""
    shown = [k for k in SHOWN if k in metrics] or [k for k in epoch_metrics(metrics) if k != "lr"]
    values = " ".join(f"{k} {float(metrics[k]):.4f}" for k in shown)
    per_epoch = elapsed / max(epoch, 1)
    eta = per_epoch * max(live.epochs - epoch, 0)
    stage = f"[{live.stage}] " if live.stage else ""
    return (f"{stage}{live.name}: epoch {epoch}/{live.epochs} {values} "
            f"({per_epoch:.1f} s/epoch, ETA {duration(eta)})")


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"

