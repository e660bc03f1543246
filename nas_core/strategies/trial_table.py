"""Trials and the trial table: a trial to run (:class:`TrialRequest`), a
finished one (:class:`Trial`), and every finished trial of a multi-trial search, one JSON
object per line (``trials.jsonl``: index, genotype, label, metrics, cost,
seconds, elapsed_s), rewritten atomically after each round, and the same
table flattened for people (``trials.csv``, via pandas). A killed search
resumes from ``trials.jsonl`` (nas_core.strategies.multi_trial).

The table is valid only for the search that wrote it: its first line holds
that search's fingerprint, and a table with another fingerprint is ignored
(and replaced) rather than replayed."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from nas_core.io import atomic_path
from nas_core.spaces import SearchSpace


@dataclass(frozen=True)
class TrialRequest:
    """One trial to evaluate: its index, genotype, seed and budget."""

    index: int
    genotype: Any
    seed: int
    budget: Optional[int]


@dataclass(frozen=True)
class Trial:
    """An evaluated trial. ``metrics`` holds the evaluator's ``score``;
    ``cost`` the space's (FLOPs, params, latency); ``seconds`` the
    evaluation's wall time; ``elapsed_s`` the search's evaluation wall time
    when the trial's round ended."""

    index: int
    genotype: Any
    metrics: dict[str, float]
    cost: dict[str, Optional[float]]
    seconds: float
    elapsed_s: float

    @property
    def score(self) -> float:
        return float(self.metrics["score"])

    def to_row(self, space: SearchSpace) -> dict[str, Any]:
        return {"index": self.index, "genotype": self.genotype.to_dict(), "label": space.label(self.genotype),
                "metrics": self.metrics, "cost": self.cost, "seconds": self.seconds, "elapsed_s": self.elapsed_s}

    @classmethod
    def from_row(cls, row: dict[str, Any], space: SearchSpace) -> "Trial":
        return cls(int(row["index"]), space.genotype_from_dict(row["genotype"]),
                   {k: float(v) for k, v in row["metrics"].items()}, dict(row["cost"]), float(row["seconds"]),
                   float(row["elapsed_s"]))



def write_trials(path: Path, trials: Sequence[Trial], space: Any, fingerprint: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(json.dumps({"fingerprint": fingerprint}) + "\n")
        for trial in trials:
            f.write(json.dumps(trial.to_row(space), default=float) + "\n")


def read_trials(path: Path, space: Any, fingerprint: str) -> list[Trial]:
    """The recorded trials of the search ``fingerprint`` (none when the
    file is missing or belongs to another search)."""
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    if not lines or json.loads(lines[0]).get("fingerprint") != fingerprint:
        return []
    return [Trial.from_row(json.loads(line), space) for line in lines[1:] if line.strip()]


def trial_frame(trials: Sequence[Trial]) -> pd.DataFrame:
    """One row per trial: index, label-free metrics and cost columns,
    seconds, elapsed_s, best score so far and whether it is on the
    score-vs-FLOPs Pareto front."""
    rows = [{"trial": t.index, **t.metrics, **{k: v for k, v in t.cost.items()}, "seconds": t.seconds,
             "elapsed_s": t.elapsed_s} for t in trials]
    frame = pd.DataFrame(rows)
    frame["best_score"] = frame["score"].cummax()
    frame["pareto"] = pareto_mask(frame["score"].to_numpy(), frame["flops"].to_numpy(dtype=float))
    return frame


def pareto_mask(score: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """True for the non-dominated trials: no other trial has a score at
    least as high and a cost at most as large, with one of them strictly
    better."""
    score, cost = np.asarray(score, float), np.asarray(cost, float)
    at_least = (score[None, :] >= score[:, None]) & (cost[None, :] <= cost[:, None])
    strictly = (score[None, :] > score[:, None]) | (cost[None, :] < cost[:, None])
    return ~(at_least & strictly).any(axis=1)
