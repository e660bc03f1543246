"""Trials of a multi-trial search inside the search stage.

Each round of the strategy's proposals (nas_core.strategies.multi_trial)
fans out through the stage's task runner (``ctx.fan_out``: thread pool,
Dask, Ray), one Prefect task per trial running :func:`run_trial` on a
picklable :class:`TrialJob`: the worker loads the subset's splits itself,
builds the evaluator (and the trained supernet, for the ``supernet``
evaluator), sets its torch threads and device, and returns the trial's
metrics, cost and time. Each trial's nested run is created here in the
stage's thread; an evaluator that trains logs its epochs to it live
(tasks/live.py: metrics per epoch and a progress line in the stage log),
and the trial's final metrics, cost and genotype are logged here when its
round returns.
After every round the trial table (``trials.jsonl``, ``trials.csv``) is
rewritten, so a killed search resumes from it (the search stage's output
persists between runs).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from nas_core.config import DataConfig, Params
from nas_core.evaluators import EVALUATORS, EvalData, create_evaluator
from nas_core.io import atomic_path
from nas_core.spaces import SearchSpace
from nas_core.strategies import SupernetSpec
from nas_core.strategies.multi_trial import MultiTrialStrategy, Trial, TrialRequest, evaluate_trial
from nas_core.strategies.trial_table import read_trials, trial_frame, write_trials
from tasks.context import StageContext
from tasks.live import LiveRun, epoch_callback
from tasks.nas import fingerprint, supernet_spec
from tasks.placement import threads_per_task, worker_device
from tasks.worker_cache import per_thread, subset_splits

TRIALS = "trials.jsonl"
TRIALS_CSV = "trials.csv"


@dataclass(frozen=True)
class TrialJob:
    request: TrialRequest
    space: SearchSpace
    evaluator: str
    evaluator_config: dict[str, Any]
    data: DataConfig
    project_root: str
    subset_dir: str
    supernet: Optional[SupernetSpec] = None
    device: str = "cpu"  # runtime.device; resolved in the worker (tasks.placement.worker_device)
    threads: int = 1
    live: Optional[LiveRun] = None  # the trial's nested run: epochs of a training evaluator are logged live


def _eval_data(data: DataConfig, project_root: str, subset_dir: str) -> EvalData:
    """The subset's splits (tasks.worker_cache: once per worker process)."""
    source, splits = subset_splits(data, project_root, subset_dir)
    return EvalData(splits["subset"], splits["val"], source.name)


def _supernet(spec: SupernetSpec, space: SearchSpace, device: torch.device) -> Any:
    """The trained supernet, loaded once per worker thread (the evaluator
    recalibrates BatchNorm in place, so threads must not share one)."""
    key = (spec.strategy, spec.checkpoint, Path(spec.checkpoint).stat().st_mtime_ns, repr(space.fingerprint()),
           str(device))
    return per_thread("supernet", key, lambda: spec.load(space, device))


def run_trial(job: TrialJob) -> dict[str, Any]:
    """One trial in whatever worker runs it."""
    torch.set_num_threads(job.threads)
    device = worker_device(job.device)
    reporter = epoch_callback(job.live)
    evaluator = create_evaluator(job.evaluator, job.space, job.evaluator_config, device, reporter)
    supernet = _supernet(job.supernet, job.space, device) if job.supernet else None
    result = evaluate_trial(evaluator, job.request, _eval_data(job.data, job.project_root, job.subset_dir), supernet)
    return {**result, "live_keys": sorted(reporter.logged_keys) if reporter is not None else []}


def final_metrics(result: dict[str, Any]) -> dict[str, float]:
    """A trial's metrics without those its worker already logged per epoch
    (so no metric of a nested run has two values for one epoch)."""
    return {k: v for k, v in result["metrics"].items() if k not in set(result.get("live_keys", ()))}


def evaluator_supernet(params: Params, ctx: StageContext, space: SearchSpace, evaluator: str) -> Optional[SupernetSpec]:
    """The search's pretrained supernet (tasks.nas.build_trainer: the final
    pretrain checkpoint), when ``evaluator`` needs one."""
    if not EVALUATORS.get(evaluator).needs_supernet:
        return None
    return supernet_spec(params, ctx, space)


class TrialRounds:
    """The ``evaluate`` and ``on_round`` callbacks of a search: fan a round
    out with a nested MLflow run per trial, then record it."""

    def __init__(self, params: Params, ctx: StageContext, strategy: MultiTrialStrategy, table_key: str,
                 bar: Any) -> None:
        self.params, self.ctx, self.strategy, self.key, self.bar = params, ctx, strategy, table_key, bar
        name = strategy.config.evaluator
        self.evaluator = (name, getattr(params.evaluators, name).model_dump(mode="json"))
        self.supernet = evaluator_supernet(params, ctx, strategy.space, name)

    def job(self, request: TrialRequest, log: Any, name: str) -> TrialJob:
        p, ctx = self.params, self.ctx
        epochs = request.budget or self.evaluator[1].get("epochs") or 0
        return TrialJob(request, self.strategy.space, *self.evaluator, p.data, str(ctx.root),
                        str(ctx.artifacts("subset")), self.supernet, p.runtime.device, threads_per_task(p.runtime),
                        LiveRun.for_run(log, name, int(epochs), stage=ctx.name))

    def evaluate(self, requests: list[TrialRequest]) -> list[dict[str, Any]]:
        space = self.strategy.space
        names = [f"trial{r.index:05d}" for r in requests]
        runs = [self.ctx.log.child(f"search:{n}", tags={"nasflow.trial": str(r.index)})
                for n, r in zip(names, requests)]
        jobs = [self.job(r, log, n) for r, log, n in zip(requests, runs, names)]
        results = self.ctx.fan_out_with_runs(run_trial, jobs, runs, names, "search-trials")
        for request, result, log in zip(requests, results, runs):
            log.log_params({"trial": request.index, "seed": request.seed, "budget": request.budget,
                            "evaluator": self.evaluator[0], "genotype": space.label(request.genotype)[:500]})
            log.log_metrics({**final_metrics(result), **{k: v for k, v in result["cost"].items() if v is not None},
                             "seconds": result["seconds"]})
            log.log_dict(request.genotype.to_dict(), "genotype.json")
            log.end("FINISHED")
        return results

    def on_round(self, trials: list[Trial]) -> None:
        record(self.ctx.out, self.strategy, self.key)
        best = self.strategy.best().score
        for trial in trials:
            self.ctx.log.log_metrics({"trial_score": trial.score, "best_score": best,
                                      **self.strategy.signals.get(trial.index, {})}, step=trial.index + 1)
        self.bar.update(len(trials))
        self.bar.set_postfix({"best": f"{best:.3f}"})


def record(out: Path, strategy: MultiTrialStrategy, key: str) -> None:
    """The trial table: trials.jsonl (resume) and trials.csv (people)."""
    write_trials(out / TRIALS, strategy.trials, strategy.space, key)
    frame = trial_frame(strategy.trials)
    frame.insert(1, "label", [strategy.space.label(t.genotype) for t in strategy.trials])
    with atomic_path(out / TRIALS_CSV) as tmp:
        frame.to_csv(tmp, index=False)


def run_search(params: Params, ctx: StageContext, strategy: MultiTrialStrategy) -> list[Trial]:
    """Every trial of the search, resuming from a recorded table."""
    evaluator = strategy.config.evaluator
    key = fingerprint(params, ctx, strategy.space, evaluators={evaluator: getattr(params.evaluators, evaluator)
                                                          .model_dump(mode="json")})
    recorded = read_trials(ctx.out / TRIALS, strategy.space, key)
    with ctx.progress(total=strategy.config.trials, desc=f"{strategy.name} trials", initial=len(recorded)) as bar:
        rounds = TrialRounds(params, ctx, strategy, key, bar)
        trials = strategy.search(rounds.evaluate, recorded, rounds.on_round)
    record(ctx.out, strategy, key)
    return trials

