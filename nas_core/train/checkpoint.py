"""Per-epoch checkpoints that a killed run resumes from.

Layout: ``<dir>/epoch_{epoch:03d}.pt`` (torch.save of a state dict) and
beside it ``epoch_{epoch:03d}.pt.sha256`` (hex digest of the .pt bytes).
Both are written atomically, the .pt first: a checkpoint is *complete*
when its sidecar exists, so a kill between the two leaves an incomplete
checkpoint that is ignored and later overwritten. Loading checks the hash,
then ``torch.load(weights_only=True)``; a mismatch or unreadable file is a
:class:`CorruptCheckpointError` naming the file. :func:`latest_good_checkpoint`
skips corrupt ones with a :class:`CorruptCheckpointWarning`, renames them
to ``*.corrupt`` (kept for inspection) and falls back to the previous one.

Everything stored must be loadable with ``weights_only=True``: tensors,
numbers, strings, lists, tuples and dicts (see :func:`rng_state`).
"""
from __future__ import annotations

import os
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from nas_core.io import atomic_path, load_tensors, sha256_file, write_text

_NAME = re.compile(r"^epoch_(\d{3,})\.pt$")


class CorruptCheckpointError(RuntimeError):
    """A checkpoint whose hash does not match or that cannot be loaded."""


class CorruptCheckpointWarning(UserWarning):
    """A corrupt checkpoint was skipped while looking for one to resume from."""


def checkpoint_path(directory: str | os.PathLike, epoch: int) -> Path:
    return Path(directory) / f"epoch_{epoch:03d}.pt"


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def save_checkpoint(directory: str | os.PathLike, epoch: int, state: dict[str, Any]) -> Path:
    """Write ``state`` as checkpoint ``epoch`` (1-based: epochs finished)."""
    path = checkpoint_path(directory, epoch)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
        digest = sha256_file(tmp)
    write_text(_sidecar(path), digest + "\n")
    return path


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    path = Path(path)
    sidecar = _sidecar(path)
    if not path.is_file() or not sidecar.is_file():
        missing = sidecar.name if path.is_file() else path.name
        raise CorruptCheckpointError(f"checkpoint {path} is incomplete (missing {missing})")
    want = sidecar.read_text().strip()
    have = sha256_file(path)
    if have != want:
        raise CorruptCheckpointError(f"checkpoint {path} is corrupt: sha256 {have[:12]}... "
                                     f"does not match {sidecar.name} ({want[:12]}...)")
    try:
        state = load_tensors(path, map_location=map_location)
    except Exception as exc:  # unpickling errors have many types
        raise CorruptCheckpointError(f"checkpoint {path} cannot be loaded: {exc}") from None
    if not isinstance(state, dict):
        raise CorruptCheckpointError(f"checkpoint {path} holds {type(state).__name__}, expected a dict")
    return state


def list_checkpoints(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints (``.pt`` with its sidecar), sorted by epoch."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = _NAME.match(path.name)
        if match and _sidecar(path).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def quarantine(path: Path) -> None:
    """Rename a corrupt checkpoint (and its sidecar) to ``*.corrupt``."""
    for p in (path, _sidecar(path)):
        if p.exists():
            os.replace(p, p.with_name(p.name + ".corrupt"))


def latest_good_checkpoint(directory: str | os.PathLike, map_location: Any = "cpu"
                           ) -> tuple[int, dict[str, Any]] | None:
    """The newest checkpoint that loads, as (epoch, state); None if none."""
    for epoch, path in reversed(list_checkpoints(directory)):
        try:
            return epoch, load_checkpoint(path, map_location)
        except CorruptCheckpointError as exc:
            warnings.warn(f"{exc}; skipping it (renamed to {path.name}.corrupt) and trying the "
                          "previous epoch", CorruptCheckpointWarning, stacklevel=2)
            quarantine(path)
    return None


def clear_checkpoints(directory: str | os.PathLike) -> None:
    directory = Path(directory)
    if directory.is_dir():
        shutil.rmtree(directory)


def resume_state(directory: str | os.PathLike, fingerprint: str,
                 map_location: Any = "cpu") -> dict[str, Any] | None:
    """The state to resume from, or None to start afresh. Checkpoints whose
    ``fingerprint`` (a digest of the settings that shape training) differs
    were made by another configuration: they are removed, with a warning."""
    found = latest_good_checkpoint(directory, map_location)
    if found is None:
        return None
    epoch, state = found
    if state.get("fingerprint") != fingerprint:
        warnings.warn(f"checkpoints in {directory} were made with other settings "
                      f"(epoch {epoch}); removing them and starting afresh", stacklevel=2)
        clear_checkpoints(directory)
        return None
    return state


class CheckpointCallback:
    """Saves ``strategy.state_dict()`` (+ ``fingerprint``) after every epoch."""

    def __init__(self, directory: str | os.PathLike, fingerprint: str) -> None:
        self.directory, self.fingerprint = Path(directory), fingerprint

    def on_epoch_end(self, strategy: Any, epoch: int, metrics: dict[str, float]) -> None:
        state = strategy.state_dict()
        state["fingerprint"] = self.fingerprint
        save_checkpoint(self.directory, epoch, state)


def run_resumable(strategy: Any, data: Any, directory: str | os.PathLike, fingerprint: str,
                  callbacks: Sequence[Any] = ()) -> Any:
    """``strategy.run`` continuing from the newest good checkpoint in
    ``directory`` (made with the same ``fingerprint``), saving one per
    epoch before the other ``callbacks`` see it. Returns its SearchResult."""
    state = resume_state(directory, fingerprint)
    saver = CheckpointCallback(directory, fingerprint)
    return strategy.run(data, callbacks=[saver, *callbacks], state=state)


#: The layout of the strategy states in checkpoints; part of the resume fingerprint (tasks.nas), so a
#: checkpoint of another layout is discarded, never half-loaded. 2: every strategy keeps its RNG
#: states under "rng" (:func:`rng_state`).
STATE_FORMAT = 2


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU + CUDA) RNG states in weights_only-safe
    types (lists and tensors instead of tuples of NumPy arrays)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {"python": [version, list(internal), gauss],
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
