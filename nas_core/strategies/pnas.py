"""Progressive neural architecture search (Liu et al., ECCV 2018): sequential
model-based optimisation over cells of growing size, on the cell space.

A block is PNAS's: two inputs (earlier nodes or the cell's two inputs), an
op on each, added. Level b holds cells of b blocks; level 1 is trained
(every one-block cell, or ``first_level`` of them), then for b = 2 .. B:

1. every cell trained at level b - 1 is expanded by one block in every way
   (all input pairs of the next node, all op pairs);
2. the surrogate, fitted on every cell trained so far, ranks the
   expansions and the top ``beam`` (K) are proposed, best first, as trials;
3. when they are observed the surrogate is refitted on all trained cells.

Once B blocks are reached, further trials take the next best B-block
expansions under the refitted surrogate, ``beam`` at a time. The search
reaches B blocks when ``trials`` >= first_level + beam * (B - 1); the result
is the best trained cell of any size.

Choices, stated:

* "A cell of b blocks" on this space (4 nodes, all concatenated): nodes
  2 .. b+1 are the searched blocks; every later node is a filler that adds
  ``skip_connect`` of the cell's two inputs (parameter-free, independent of
  the searched blocks). The filler's tokens are constant at a level, so the
  surrogate sees the blocks through the whole ``encode`` row.
* The normal and the reduction cell are the same cell, as in PNAS (the
  reduction cell applies it with stride 2).
* The surrogate is the paper's MLP-ensemble variant: ``ensemble`` MLPs
  (scikit-learn, two hidden layers of ``hidden`` units, Adam, squared loss
  on standardised scores; the paper: L1) over the one-hot ``encode`` row,
  member k fitted on all folds but fold k of a seeded ``ensemble``-fold
  split (the paper: each on 4/5 of the data); the prediction is the mean.
* The paper trains every one-block cell; with the darts op set there are
  49 here (7 x 7 op pairs on inputs 0 and 1), and ``first_level`` < 49
  draws that many with the seeded generator for digits' budget.
* The CPU-bound fits and predictions run on one BLAS thread (tiny
  matrices; on a loaded machine threads only slowed them down).

Learning signal: every trial's history row holds its ``level`` (blocks),
and from level 2 on its ``predicted`` score and ``surrogate_tau``, the
Kendall tau between prediction and score over its level's trials (held out:
the surrogate had not seen them), as the paper measures its predictors.
"""
from __future__ import annotations

import itertools
import warnings
from typing import Any, Optional, Sequence

import numpy as np
from pydantic import Field
from scipy.stats import kendalltau
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import KFold
from sklearn.neural_network import MLPRegressor
from threadpoolctl import threadpool_limits

from nas_core.spaces.cell.genotype import NUM_INPUTS, NUM_NODES, SKIP
from nas_core.spaces.cell.sampling import HALF_WIDTH
from nas_core.strategies.base import STRATEGIES, SpacesOf, StrategyError
from nas_core.strategies.multi_trial import MultiTrialConfig, MultiTrialStrategy, Trial


class PNASConfig(MultiTrialConfig):
    """``strategies.pnas``: ``blocks`` B, ``beam`` K, ``first_level`` (one-
    block cells trained; None: all), the surrogate's ``ensemble`` size,
    ``hidden`` units and ``max_iter`` epochs (paper: B = 5, K = 256, all,
    5 MLPs of 100 units)."""

    blocks: int = Field(NUM_NODES, ge=1, le=NUM_NODES)
    beam: int = Field(256, ge=1)
    first_level: Optional[int] = Field(None, ge=1)
    ensemble: int = Field(5, ge=1)
    hidden: int = Field(100, ge=1)
    max_iter: int = Field(300, ge=1)


class Surrogate:
    """An ensemble of MLPs predicting a trial's score from its encoded row
    (one-hot per position); deterministic for a seed."""

    def __init__(self, bounds: np.ndarray, members: int, hidden: int, max_iter: int, seed: int) -> None:
        self.bounds, self.members, self.hidden, self.max_iter, self.seed = bounds, members, hidden, max_iter, seed
        self.models: list[MLPRegressor] = []
        self.mean, self.std = 0.0, 1.0

    def features(self, rows: np.ndarray) -> np.ndarray:
        offsets = np.concatenate([[0], np.cumsum(self.bounds)[:-1]])
        out = np.zeros((len(rows), int(self.bounds.sum())))
        np.put_along_axis(out, np.asarray(rows, dtype=np.int64) + offsets, 1.0, axis=1)
        return out

    def fit(self, rows: np.ndarray, scores: np.ndarray) -> "Surrogate":
        x, y = self.features(rows), np.asarray(scores, dtype=np.float64)
        self.mean, self.std = float(y.mean()), float(y.std()) or 1.0
        y = (y - self.mean) / self.std
        folds = (KFold(self.members, shuffle=True, random_state=self.seed).split(x)
                 if 1 < self.members <= len(x) else [(np.arange(len(x)), None)] * self.members)
        self.models = []
        with warnings.catch_warnings(), threadpool_limits(1):  # tiny matrices: threads only cost
            warnings.simplefilter("ignore", ConvergenceWarning)
            for k, (train, _) in enumerate(folds):
                model = MLPRegressor(hidden_layer_sizes=(self.hidden, self.hidden), max_iter=self.max_iter,
                                     random_state=self.seed + k)
                self.models.append(model.fit(x[train], y[train]))
        return self

    def predict(self, rows: np.ndarray) -> np.ndarray:
        if not self.models:
            raise StrategyError("pnas surrogate: predict before fit")
        x = self.features(rows)
        with threadpool_limits(1):
            return np.mean([m.predict(x) for m in self.models], axis=0) * self.std + self.mean


@STRATEGIES.register("pnas")
class ProgressiveNAS(MultiTrialStrategy):
    name = "pnas"
    Config = PNASConfig
    spaces = SpacesOf("cell")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if SKIP not in self.space.op_names:
            raise StrategyError(f"spaces.cell.op_set = {self.space.op_set!r}: pnas fills the nodes beyond a cell's "
                                f"blocks with {SKIP!r}, which this op set lacks")
        self.skip = self.space.op_names.index(SKIP)
        self.pool = self.expand(self.filler(), 0)  # every cell of the current level's size
        self.level, self.queue, self.taken, self.ranked = 1, self._first_level(), 0, False
        self.level_trials: list[Trial] = []
        self.trained: set[tuple[int, ...]] = set()
        self.predicted: dict[tuple[int, ...], float] = {}

    # ---------------------------------------------------------- cells as half rows
    def filler(self) -> np.ndarray:
        """The half row (normal cell) of a cell with no block: every node
        ``skip_connect`` of inputs 0 and 1."""
        return np.array([0, self.skip, 1, self.skip] * NUM_NODES, dtype=np.int64)

    def expand(self, half: np.ndarray, blocks: int) -> list[np.ndarray]:
        """Every cell of ``blocks`` + 1 blocks whose first ``blocks`` blocks are ``half``'s."""
        node, out = NUM_INPUTS + blocks, []
        for (a, b), (op_a, op_b) in itertools.product(itertools.combinations(range(node), 2),
                                                        itertools.product(self.space.choice_ops, repeat=2)):
            child = half.copy()
            child[4 * blocks:4 * blocks + 4] = [a, op_a, b, op_b]
            out.append(child)
        return out

    def genotype(self, half: np.ndarray) -> Any:
        return self.space.decode(np.concatenate([half, half]))

    def _first_level(self) -> list[np.ndarray]:
        cells = self.pool
        wanted = self.config.first_level
        if wanted is None or wanted >= len(cells):
            return cells
        return [cells[int(i)] for i in self.rng.choice(len(cells), wanted, replace=False)]

    # ---------------------------------------------------------- the search
    def level_size(self) -> int:
        """Trials of the current level: the whole first level, then ``beam``."""
        return min(self.config.beam, len(self.queue)) if self.ranked else len(self.queue)

    def propose(self, count: int) -> list[Any]:
        if self.taken >= self.level_size():
            self._next_level()
        picked = self.queue[self.taken:self.taken + min(count, self.level_size() - self.taken)]
        self.taken += len(picked)
        return [self.genotype(h) for h in picked]

    def observe(self, trials: list[Trial]) -> None:
        super().observe(trials)
        for t in trials:
            key = tuple(self.space.encode(t.genotype)[:HALF_WIDTH])
            self.trained.add(key)
            self.signals[t.index] = {"level": float(self.level)}
            if key in self.predicted:
                self.signals[t.index]["predicted"] = self.predicted[key]
        self.level_trials.extend(trials)
        if len(self.level_trials) == self.level_size() and self.ranked:
            self._log_tau(self.level_trials)

    def _log_tau(self, trials: Sequence[Trial]) -> None:
        predicted = [self.signals[t.index]["predicted"] for t in trials]
        tau = kendalltau(predicted, [t.score for t in trials]).statistic if len(trials) > 1 else np.nan
        if np.isfinite(tau):
            for t in trials:
                self.signals[t.index]["surrogate_tau"] = float(tau)

    def _next_level(self) -> None:
        """Refit on every trained cell, expand this level's cells (at B:
        keep the B-block pool) and rank the untrained expansions."""
        surrogate = self.fit_surrogate(self.trials, seed=self.seed * 100 + self.level)
        if self.level < self.config.blocks:
            halves = [self.space.encode(t.genotype)[:HALF_WIDTH] for t in self.level_trials]
            self.pool = [c for h in halves for c in self.expand(h, self.level)]
            self.level += 1
        pool = [c for c in self.pool if tuple(c) not in self.trained]
        if not pool:
            raise StrategyError(f"strategies.pnas.trials = {self.config.trials}: every {self.level}-block expansion "
                                "is trained; lower trials")
        scores = surrogate.predict(np.stack([np.concatenate([c, c]) for c in pool]))
        order = np.argsort(-scores, kind="stable")
        self.queue = [pool[int(i)] for i in order]
        self.predicted.update({tuple(pool[int(i)]): float(scores[i]) for i in order[: self.config.beam]})
        self.taken, self.level_trials, self.ranked = 0, [], True

    def fit_surrogate(self, trials: Sequence[Trial], seed: int) -> Surrogate:
        """The ensemble fitted on ``trials``' encoded rows and scores."""
        surrogate = Surrogate(self.space.encoding_bounds(), self.config.ensemble, self.config.hidden,
                              self.config.max_iter, seed)
        return surrogate.fit(np.stack([self.space.encode(t.genotype) for t in trials]),
                             np.array([t.score for t in trials]))
