"""Figures of a multi-trial search: the best score so far against trials
and against wall time, and score against FLOPs (and measured latency where
the space has it) with the non-dominated trials marked."""
from __future__ import annotations

from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from nas_core.strategies.trial_table import Trial, trial_frame  # noqa: E402


def best_so_far_figure(trials: Sequence[Trial], title: str) -> Any:
    frame = trial_frame(trials)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for ax, x, label in ((axes[0], frame["trial"] + 1, "trials"), (axes[1], frame["elapsed_s"], "wall time (s)")):
        ax.scatter(x, frame["score"], s=10, color="0.6", label="trial")
        ax.step(x, frame["best_score"], where="post", color="C0", label="best so far")
        ax.set_xlabel(label)
    axes[0].set_ylabel("score")
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"{title}: best score so far")
    fig.tight_layout()
    return fig


def pareto_figure(trials: Sequence[Trial], title: str) -> Any:
    frame = trial_frame(trials)
    costs = [c for c in ("flops", "latency_ms") if c in frame and frame[c].notna().all()]
    fig, axes = plt.subplots(1, len(costs), figsize=(4.5 * len(costs), 3.6), squeeze=False)
    for ax, cost in zip(axes[0], costs):
        front = frame[frame["pareto"]].sort_values(cost)
        ax.scatter(frame[cost], frame["score"], s=12, color="0.6", label="trial")
        ax.plot(front[cost], front["score"], "o-", color="C3", ms=4, label="non-dominated (score vs FLOPs)")
        ax.set_xlabel(cost)
        ax.set_ylabel("score")
        ax.legend(loc="lower right", fontsize=7)
    fig.suptitle(f"{title}: score against cost")
    fig.tight_layout()
    return fig
