"""Evolution over hierarchical representations (Liu et al., ICLR 2018;
the survey's Fig. 4), on the ``hierarchical`` space.

The population starts with ``population`` genotypes from the space's
``random`` (the space documents how: the paper diversifies trivial
genotypes by random mutations). Each child comes from a tournament: a
random ``tournament`` fraction of the population (at least two members,
drawn without replacement) is compared and the best is mutated by the
space's ``mutate`` (a random level, a random motif of that level, a random
edge, a new op). Unlike aging evolution nothing is ever removed: the
population is every trial so far (the paper's choice).

Departures, stated: the paper's population of 200, 5 % tournaments and
7000 evolution steps on 200 GPUs; the digits defaults are 8, 25 % and 24
trials. Rounds of ``batch`` children as in nas_core.strategies.multi_trial.
"""
from __future__ import annotations

import math

from pydantic import Field

from nas_core.strategies.base import STRATEGIES, SpacesOf
from nas_core.strategies.evolution import AgingEvolution
from nas_core.strategies.multi_trial import MultiTrialConfig, MultiTrialStrategy, Trial


class HierEvolutionConfig(MultiTrialConfig):
    """``strategies.hier_evolution``: the initial ``population`` and the
    ``tournament`` fraction (paper: 200 and 0.05)."""

    population: int = Field(8, ge=2)
    tournament: float = Field(0.25, gt=0.0, le=1.0)


@STRATEGIES.register("hier_evolution")
class HierarchicalEvolution(AgingEvolution):
    """Aging evolution's proposals (an initial population, then mutated
    tournament winners) with this paper's tournament over every trial so
    far."""

    name = "hier_evolution"
    Config = HierEvolutionConfig
    spaces = SpacesOf("hierarchical")

    def observe(self, trials: list[Trial]) -> None:
        MultiTrialStrategy.observe(self, trials)  # the population is every trial: nothing ages out

    def tournament(self) -> Trial:
        size = min(len(self.trials), max(2, math.ceil(self.config.tournament * len(self.trials))))
        drawn = self.rng.choice(len(self.trials), size=size, replace=False)
        return max((self.trials[int(i)] for i in sorted(drawn)), key=lambda t: t.score)
