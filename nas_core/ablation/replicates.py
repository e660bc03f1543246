"""Independent replicates of the Table-1 study.

Replicate r has its own seed (derived from the runtime seed and r), and with
it its own D~ (``subset_fraction`` of D, stratified), its own probe images,
its own s sampled architectures and its own training seeds (separate and
full training alike). Replicate results live under ``r<NNN>/`` of each
stage's output; every architecture of every replicate is one fan-out item,
stored as soon as it finishes (``store.run_cached``), so a study killed in
the middle of a replicate resumes with only the unfinished networks.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from nas_core.ablation.separate import ArchData, ArchJob, TrainSpec, make_jobs
from nas_core.data.subset import stratified_fraction
from nas_core.spaces.channel_ratio import ChannelRatioSpace


@dataclass(frozen=True)
class Replicate:
    """One replicate: its index, seed, D~ (indices into the training pool)
    and σ = |D~| / |D|."""

    index: int
    seed: int
    subset: np.ndarray
    probe: np.ndarray
    full_size: int

    @property
    def subset_ratio(self) -> float:
        return len(self.subset) / self.full_size

    def describe(self) -> dict[str, Any]:
        return {"replicate": self.index, "seed": self.seed, "subset_size": len(self.subset),
                "full_size": self.full_size, "subset_ratio": self.subset_ratio}


def replicate_seed(seed: int, replicate: int) -> int:
    return int(np.random.SeedSequence([seed, replicate]).generate_state(1)[0])


def replicate_dir(root: Path, replicate: int) -> Path:
    return Path(root) / f"r{replicate:03d}"


def draw_replicates(train_labels: np.ndarray, full_train: np.ndarray, fraction: float, probe_size: int,
                    repeats: int, seed: int) -> list[Replicate]:
    """``repeats`` replicates: D~ = ``fraction`` of ``full_train`` (stratified,
    seeded per replicate) and a probe of at most ``probe_size`` of its images."""
    out = []
    for r in range(repeats):
        rs = replicate_seed(seed, r)
        subset = stratified_fraction(train_labels, full_train, fraction, rs, "ablation.subset_fraction")
        probe = np.sort(np.random.default_rng(rs).choice(subset, min(probe_size, len(subset)), replace=False))
        out.append(Replicate(r, rs, subset, probe, len(full_train)))
    return out


class Seeded(Protocol):
    """A replicate as far as its jobs are concerned (a :class:`Replicate`,
    or what the grid stage reads back of one)."""

    index: int
    seed: int


def replicate_jobs(replicates: Sequence[Seeded], indices_of: Callable[[Any], Sequence[int]],
                   data_of: Callable[[Any], ArchData], space: ChannelRatioSpace, spec: TrainSpec,
                   device: str, cache_root: Path, kind: str) -> list[ArchJob]:
    """Every (replicate, architecture) job, replicate by replicate; records
    live in ``cache_root/r<NNN>/<index>.json`` keyed by the replicate's seed
    and data. ``indices_of`` / ``data_of`` give a replicate's space indices
    and splits."""
    jobs: list[ArchJob] = []
    for rep in replicates:
        jobs += make_jobs(indices_of(rep), space, spec, data_of(rep), device, rep.seed,
                          replicate_dir(cache_root, rep.index), kind, replicate=rep.index)
    return jobs


def by_replicate(jobs: Sequence[ArchJob], records: Sequence[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """Records grouped by replicate, in job order within each."""
    out: dict[int, list[dict[str, Any]]] = {}
    for job, record in zip(jobs, records):
        out.setdefault(job.replicate, []).append(record)
    return out
