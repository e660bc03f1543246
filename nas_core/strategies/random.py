"""Random search (the survey's baseline every NAS method must beat; Li &
Talwalkar 2019, Yang et al. 2020): every trial is an independent uniform
draw from the space (``SearchSpace.random``), so a whole round runs in
parallel and the result is the best trial. Defaults: a digits-sized budget
(24 trials); the published baselines use the budget of the method compared
against."""
from __future__ import annotations

from typing import Any

from nas_core.strategies.base import STRATEGIES, SpacesOf
from nas_core.strategies.multi_trial import MultiTrialConfig, MultiTrialStrategy


class RandomConfig(MultiTrialConfig):
    """``strategies.random``."""


@STRATEGIES.register("random")
class RandomSearch(MultiTrialStrategy):
    name = "random"
    Config = RandomConfig
    spaces = SpacesOf()

    def propose(self, count: int) -> list[Any]:
        return [self.space.random(self.rng) for _ in range(count)]
