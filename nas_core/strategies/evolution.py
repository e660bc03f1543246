"""Regularised (aging) evolution (Real et al., AAAI 2019; AmoebaNet).

The population is a queue of the last ``population`` trials. It starts
with ``population`` random genotypes (``SearchSpace.random``); after that,
each child is made by sampling ``sample`` members of the population
uniformly *with replacement* (the paper's Algorithm 1), mutating the one with
the best score (``SearchSpace.mutate``: on the cell space one op or one
input, as the paper; every space defines its own single mutation), adding
the child and removing the *oldest* member, not the worst: aging.

Departures, stated: the paper's P = 100, S = 25 over 20,000 trials on 450
GPUs; the digits defaults are P = 8, S = 3 over 24 trials. The paper's
workers run asynchronously; here a round of ``batch`` children is sampled
from the population as it is at the start of the round (nas_core.strategies.
multi_trial explains why: the same trials for a seed on any number of
workers), and the initial population is never mixed with children in one
round.
"""
from __future__ import annotations

from collections import deque
from typing import Any

from pydantic import Field, model_validator

from nas_core.sections import CrossFieldError
from nas_core.strategies.base import STRATEGIES, SpacesOf
from nas_core.strategies.multi_trial import MultiTrialConfig, MultiTrialStrategy, Trial


class EvolutionConfig(MultiTrialConfig):
    """``strategies.evolution``: ``population`` P and tournament ``sample``
    S (paper: 100 and 25)."""

    population: int = Field(8, ge=2)
    sample: int = Field(3, ge=1)

    @model_validator(mode="after")
    def _sample_fits(self) -> "EvolutionConfig":
        if self.sample > self.population:
            raise CrossFieldError("strategies.evolution.sample", self.sample,
                                  f"at most population ({self.population})")
        return self


@STRATEGIES.register("evolution")
class AgingEvolution(MultiTrialStrategy):
    name = "evolution"
    Config = EvolutionConfig
    spaces = SpacesOf()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.population: deque[Trial] = deque()

    def propose(self, count: int) -> list[Any]:
        missing = self.config.population - len(self.trials)
        if missing > 0:
            return [self.space.random(self.rng) for _ in range(min(count, missing))]
        return [self.space.mutate(self.tournament().genotype, self.rng) for _ in range(count)]

    def tournament(self) -> Trial:
        """The best of ``sample`` members drawn with replacement (the
        earliest drawn on ties)."""
        drawn = self.rng.integers(len(self.population), size=self.config.sample)
        return max((self.population[int(i)] for i in drawn), key=lambda t: t.score)

    def observe(self, trials: list[Trial]) -> None:
        super().observe(trials)
        for trial in trials:
            self.population.append(trial)
            if len(self.population) > self.config.population:
                self.population.popleft()
