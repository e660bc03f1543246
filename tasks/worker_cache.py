"""What a fan-out worker keeps between the tasks it runs: the subset's
splits per process, and one built object per thread and slot (a supernet
or a restored strategy, which a task changes in place, so threads must not
share it). Both are rebuilt when the files behind them change."""
from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Any, Callable, Hashable, TypeVar

from nas_core.config import DataConfig
from nas_core.data.subset import load_splits

T = TypeVar("T")
_local = threading.local()


def per_thread(slot: str, key: Hashable, build: Callable[[], T]) -> T:
    """``build()``, kept for this thread under ``slot`` while ``key`` stays
    the same (one entry per slot: a new key replaces the old object)."""
    cached = getattr(_local, slot, None)
    if cached is None or cached[0] != key:
        cached = (key, build())
        setattr(_local, slot, cached)
    return cached[1]


def subset_splits(data: DataConfig, project_root: str, subset_dir: str) -> tuple[Any, dict[str, Any]]:
    """``load_splits`` of the subset stage's output, loaded once per worker
    process while its manifest stays the same file."""
    manifest = Path(subset_dir) / "manifest.json"
    return _load(data, project_root, subset_dir, manifest.stat().st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _load(data: DataConfig, project_root: str, subset_dir: str, version: int) -> tuple[Any, dict[str, Any]]:
    return load_splits(data, Path(project_root), Path(subset_dir))
