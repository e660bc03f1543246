"""Resumable per-architecture results: one JSON file per architecture,
written atomically, keyed by everything that determines its content.

A rerun loads every file whose key matches and trains only the rest, so a
run killed half-way continues where it stopped. The mapping over the
unfinished jobs is one call to ``map_fn`` (sequential by default; the task
shell passes the Prefect fan-out), so one architecture is one fan-out item.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch

from nas_core.io import write_json

MapFn = Callable[[Callable[[Any], Any], Sequence[Any]], list[Any]]


class Job(Protocol):
    path: Path
    key: str


def sequential_map(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    return [fn(item) for item in items]


def job_key(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (genotype, hyper-parameters,
    seed, data fingerprint)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def tensor_fingerprint(*tensors: torch.Tensor) -> str:
    """sha256 of the tensors' bytes and shapes: a cached result is reused
    only on the very same data."""
    h = hashlib.sha256()
    for t in tensors:
        array = t.detach().cpu().contiguous().numpy()
        h.update(str(array.shape).encode() + str(array.dtype).encode())
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()[:16]


def load_record(path: Path, key: str) -> dict[str, Any] | None:
    """The stored record if it exists, parses and carries ``key``; else None
    (a stale or truncated file is treated as missing and retrained)."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("key") == key else None


def save_record(path: Path, key: str, record: dict[str, Any]) -> dict[str, Any]:
    record = {**record, "key": key}
    write_json(path, record)
    return record


def pending(jobs: Sequence[Job]) -> list[Job]:
    return [job for job in jobs if load_record(job.path, job.key) is None]


def run_cached(jobs: Sequence[Job], fn: Callable[[Job], dict[str, Any]],
               map_fn: MapFn = sequential_map) -> list[dict[str, Any]]:
    """Run ``fn`` on every job without a valid stored record (``fn`` stores
    its own record, so finished work survives a crash of the others), then
    return all records in job order."""
    map_fn(fn, pending(jobs))
    records = [load_record(job.path, job.key) for job in jobs]
    missing = [str(job.path) for job, rec in zip(jobs, records) if rec is None]
    if missing:
        raise RuntimeError(f"{len(missing)} architecture results missing after training, e.g. {missing[0]}")
    return records  # type: ignore[return-value]
