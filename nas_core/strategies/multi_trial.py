"""Multi-trial strategies and the trial runner they share.

A multi-trial strategy proposes genotypes, an evaluator (nas_core.
evaluators) scores each one as a *trial*, and the strategy learns from the
scores. The runner (:meth:`MultiTrialStrategy.search`) works in rounds:

1. the strategy proposes up to ``batch`` genotypes (:meth:`propose`),
   numbered by trial index;
2. the caller evaluates them (``evaluate``: the search stage fans them out
   through the stage's task runner, one Prefect task and one nested MLflow
   run per trial), each with its own seed :meth:`trial_seed` (index);
3. the strategy observes the results in index order (:meth:`observe`) and
   the caller records the round in the trial table.

Determinism and resume. Proposals depend only on the strategy's seeded NumPy
generator and on the results observed so far, and each trial's evaluation
only on its genotype and seed. So a search is a function of its seed and
``batch`` (not of how many workers run it, nor of which finishes first:
results are observed in index order). A killed search restarts from the
recorded trials: the strategy replays its proposals, takes recorded results
instead of evaluating again, and continues where the table ends. A trial is
recorded when its round ends, so a kill loses at most one round's work.

Budget: ``trials`` trials, or fewer when ``time_budget_s`` of evaluation
wall time runs out first (checked between rounds; a time budget makes the
number of trials depend on the machine).

Asynchronous evolution (AmoebaNet) lets each worker mutate the population as
it is when the worker becomes free; here a round of ``batch`` children is
proposed from the same population: deterministic for a seed, and the same
as asynchronous evolution with ``batch`` workers that finish in step.
"""
from __future__ import annotations

import time
from abc import abstractmethod
from typing import Any, Callable, ClassVar, Optional, Sequence

import numpy as np
from pydantic import Field

from nas_core.evaluators import EVALUATORS, EvaluatorName
from nas_core.sections import Section
from nas_core.strategies.base import STRATEGIES, SearchResult, SearchStrategy, SpacesOf, StrategyError
from nas_core.strategies.trial_plots import best_so_far_figure, pareto_figure
from nas_core.strategies.trial_table import Trial, TrialRequest

AUTO = "auto"
NONE = "none"


class MultiTrialConfig(Section):
    """Keys every multi-trial strategy has.

    * ``trials``: the budget in trials; ``time_budget_s``: a wall-clock cap
      (None: none).
    * ``batch``: trials proposed per round and run in parallel (module
      docstring: part of the result, like the seed).
    * ``evaluator``: a registered evaluator (its settings are
      ``evaluators.<name>``); ``budget``: its fidelity per trial (``train``:
      epochs; None: ``evaluators.<name>``'s default).
    * ``supernet``: the one-shot strategy whose supernet the pretrain stage
      trains for this search (for the ``supernet`` evaluator and for DC-NAS):
      ``auto`` = the first registered one-shot strategy on the space,
      ``none`` = no supernet.
    """

    trials: int = Field(24, ge=1)
    time_budget_s: Optional[float] = Field(None, gt=0)
    batch: int = Field(2, ge=1)
    evaluator: EvaluatorName = "train"
    budget: Optional[int] = Field(None, ge=1)
    supernet: str = AUTO


Evaluate = Callable[[list[TrialRequest]], list[dict[str, Any]]]
OnRound = Callable[[list[Trial]], None]


class MultiTrialStrategy(SearchStrategy):
    """Base of random search, evolution and the other discrete methods:
    subclasses implement :meth:`propose` and may extend :meth:`observe`."""

    kind = "multi_trial"
    Config: ClassVar[type[Section]] = MultiTrialConfig
    spaces = SpacesOf()  # every space: a trial needs only the SearchSpace protocol

    def __init__(self, space: Any, config: Any, device: Any, seed: int = 0) -> None:
        super().__init__(space, config, device, seed)
        self.rng = np.random.default_rng(seed)
        self.trials: list[Trial] = []
        self.signals: dict[int, dict[str, float]] = {}  # a strategy's learning signal per trial index
        self._supernet = self._resolve_supernet()
        if EVALUATORS.get(config.evaluator).needs_supernet and self._supernet is None:
            raise StrategyError(f"strategies.{self.name}.evaluator = {config.evaluator!r}: needs a supernet, but "
                                f"strategies.{self.name}.supernet = {config.supernet!r} gives none on space "
                                f"{space.name!r}")

    # ---------------------------------------------------------- subclass API
    @abstractmethod
    def propose(self, count: int) -> list[Any]:
        """Between 1 and ``count`` genotypes for the next round, drawn with
        ``self.rng`` from what :meth:`observe` has seen."""

    def observe(self, trials: list[Trial]) -> None:
        """Take a finished round's trials (in index order). A strategy that
        learns records its signal per trial in ``self.signals[index]``
        (controller reward and baseline, surrogate rank correlation...):
        it joins the trial's history row and its MLflow step."""
        self.trials.extend(trials)

    # ---------------------------------------------------------- the runner
    def trial_seed(self, index: int) -> int:
        """Trial ``index``'s private seed (initialisation, data order)."""
        return (self.seed * 1_000_003 + index) % 2**31

    def search(self, evaluate: Evaluate, recorded: Sequence[Trial] = (), on_round: Optional[OnRound] = None
               ) -> list[Trial]:
        """Run rounds until the budget is spent; ``recorded`` trials (from
        the table of a killed run) are replayed instead of evaluated. Returns
        every trial; ``on_round`` sees each round that was not replayed."""
        known = {t.index: t for t in recorded}
        offset = max((t.elapsed_s for t in recorded), default=0.0)
        start = time.perf_counter()
        while len(self.trials) < self.config.trials and not self._out_of_time(offset, start, known):
            requests = self._next_round()
            fresh = [r for r in requests if r.index not in known]
            results = dict(zip((r.index for r in fresh), evaluate(fresh))) if fresh else {}
            elapsed = offset + time.perf_counter() - start
            round_ = [self._trial(r, known.get(r.index), results.get(r.index), elapsed) for r in requests]
            self.observe(round_)
            if fresh and on_round is not None:
                on_round(round_)
        return list(self.trials)

    def _out_of_time(self, offset: float, start: float, known: dict[int, Trial]) -> bool:
        if self.config.time_budget_s is None or len(self.trials) < len(known):
            return False
        return offset + time.perf_counter() - start >= self.config.time_budget_s

    def _next_round(self) -> list[TrialRequest]:
        count = min(self.config.batch, self.config.trials - len(self.trials))
        genotypes = self.propose(count)
        if not 1 <= len(genotypes) <= count:
            raise StrategyError(f"strategy {self.name!r} proposed {len(genotypes)} genotypes for a round of {count}")
        first = len(self.trials)
        return [TrialRequest(first + i, g, self.trial_seed(first + i), self.config.budget)
                for i, g in enumerate(genotypes)]

    def _trial(self, request: TrialRequest, recorded: Optional[Trial], result: Optional[dict[str, Any]],
               elapsed: float) -> Trial:
        if recorded is not None:
            if recorded.genotype != request.genotype:
                raise StrategyError(f"trial {request.index}: the recorded genotype differs from this search's "
                                    "proposal (the trial table belongs to another search)")
            return recorded
        assert result is not None
        return Trial(request.index, request.genotype, result["metrics"], result["cost"], result["seconds"], elapsed)

    # ---------------------------------------------------------- results
    def best(self) -> Trial:
        """The trial with the largest score (the earliest on ties)."""
        if not self.trials:
            raise StrategyError(f"strategy {self.name!r}: no trial has finished")
        return max(self.trials, key=lambda t: (t.score, -t.index))

    def result(self, tables: Optional[dict[str, np.ndarray]] = None) -> SearchResult:
        """The best trial's genotype; ``tables`` are the architecture tables
        the search hands to DC-NAS (its supernet strategy's, else the
        space's uniform ones); ``history`` one row per trial."""
        history, best = [], -np.inf
        for t in self.trials:
            best = max(best, t.score)
            history.append({"trial": float(t.index + 1), "score": t.score, "best_score": best,
                            "elapsed_s": t.elapsed_s, **self.signals.get(t.index, {})})
        return SearchResult(self.best().genotype, dict(tables) if tables else self.space.uniform_tables(), history,
                            {"trials": list(self.trials)})

    @classmethod
    def delegates(cls) -> tuple[str, ...]:
        """The one-shot strategies ``supernet`` may name on any of this
        strategy's spaces: the pretrain stage trains theirs."""
        return tuple(n for n in STRATEGIES.names()
                     if STRATEGIES.get(n).kind == "one_shot" and set(STRATEGIES.get(n).spaces) & set(cls.spaces))

    def supernet_name(self) -> Optional[str]:
        return self._supernet

    def _resolve_supernet(self) -> Optional[str]:
        wanted = self.config.supernet
        one_shot = [n for n in STRATEGIES.names()
                    if STRATEGIES.get(n).kind == "one_shot" and self.space.name in STRATEGIES.get(n).spaces]
        if wanted == NONE:
            return None
        if wanted == AUTO:
            return one_shot[0] if one_shot else None
        if wanted not in one_shot:
            raise StrategyError(f"strategies.{self.name}.supernet = {wanted!r}: allowed {AUTO}, {NONE}"
                                f"{''.join(', ' + n for n in one_shot)} (one-shot strategies on {self.space.name!r})")
        return wanted

    def progress_postfix(self, metrics: dict[str, float]) -> dict[str, str]:
        return {k: f"{metrics[k]:.3f}" for k in ("score", "best_score") if k in metrics}

    def figures(self, result: SearchResult) -> dict[str, Any]:
        trials = result.extras["trials"]
        return {"best_so_far.png": best_so_far_figure(trials, self.name),
                "pareto.png": pareto_figure(trials, self.name), **super().figures(result)}


def evaluate_trial(evaluator: Any, request: TrialRequest, data: Any, supernet: Any = None) -> dict[str, Any]:
    """One trial's result: the evaluator's metrics (which must hold
    ``score``), the space's cost of the genotype and the wall time."""
    start = time.perf_counter()
    metrics = evaluator.evaluate(request.genotype, data, request.seed, request.budget, supernet)
    if "score" not in metrics:
        raise StrategyError(f"evaluator {evaluator.name!r} returned no 'score' (got {sorted(metrics)})")
    return {"metrics": {k: float(v) for k, v in metrics.items()}, "cost": evaluator.space.cost(request.genotype),
            "seconds": time.perf_counter() - start}
