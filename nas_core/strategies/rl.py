"""NASNet's reinforcement-learning controller (Zoph et al., CVPR 2018; the
controller of ENAS, Pham et al., ICML 2018) as a multi-trial strategy.

An LSTM emits a genotype token by token over the positions of
``space.encode`` (on the cell space: per node of the normal then the
reduction cell, input, op, input, op: NASNet's block without the combiner,
which is add in this space). Position j has its own vocabulary of
``space.encoding_bounds()[j]`` tokens, its own softmax head and its own
token embedding; the first step reads a learned start embedding (ENAS).

Each round samples ``batch`` children from the current policy (each child a
trial). When the round's scores R are observed, one REINFORCE step with Adam
minimises ``-mean_i (R_i - b) log p(child_i) - entropy_weight * H``, where
H is the mean over the round's children of the summed per-position policy
entropies (the entropy bonus) and b the exponential moving-average baseline
before the round; b then takes each R_i in index order,
``b <- decay * b + (1 - decay) * R_i``.

Choices where the papers are vague or do not fit, stated:

* Invalid tokens. Some spaces reject some token vectors in ``decode``. The
  controller draws each token among the space's ``allowed_tokens`` (on the
  cell spaces a node's first input is not its last candidate, the second
  input is larger than the first, ``none`` is never an op: the canonical
  rows), so every sample there is valid. Where a space allows every
  in-bounds token, a child that ``decode`` rejects (GenotypeError) is
  drawn again, at most
  ``max_resamples`` times, then a StrategyError.
* The baseline starts at the first round's mean reward (NASNet and ENAS
  start it at 0, which for a budget of a few dozen trials makes the first
  rounds' updates push every sample up alike).
* The log-probabilities of an update are those of the observed genotypes'
  ``encode`` rows under the current policy (the policy that sampled them:
  one update per round), so a replayed search takes the same steps.
* The update is REINFORCE (the NAS paper of Zoph & Le 2017 and ENAS);
  NASNet trained its controller with PPO.
* The token embeddings are ``hidden`` wide, like the LSTM (ENAS).
* Published settings are the Config defaults (LSTM 100 units, Adam
  3.5e-4, entropy weight 1e-4 (ENAS), baseline decay 0.95 (NASNet)); they
  assume thousands of children, so ``params.yaml`` scales them to digits'
  few dozen trials.

History: besides the runner's columns, every trial's row holds ``reward``,
``baseline`` (before its round's update), ``advantage`` and ``entropy``
(of the round's policy), so the learning signal is logged with the trials.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
from pydantic import Field
from torch import nn

from nas_core.spaces.base import GenotypeError
from nas_core.strategies.base import STRATEGIES, SpacesOf, StrategyError
from nas_core.strategies.multi_trial import MultiTrialConfig, MultiTrialStrategy, Trial

Mask = Callable[[int, np.ndarray], np.ndarray]


class RLConfig(MultiTrialConfig):
    """``strategies.rl``: the controller's LSTM width ``hidden``, Adam's
    ``lr``, ``entropy_weight``, ``baseline_decay`` and how often a rejected
    child is drawn again (``max_resamples``)."""

    hidden: int = Field(100, ge=1)
    lr: float = Field(3.5e-4, gt=0.0)
    entropy_weight: float = Field(1e-4, ge=0.0)
    baseline_decay: float = Field(0.95, ge=0.0, lt=1.0)
    max_resamples: int = Field(100, ge=1)


class Controller(nn.Module):
    """An LSTM cell over the positions of an encoding; position j has a
    softmax head and an embedding of ``bounds[j]`` tokens. ENAS's logit
    shaping, off by default: logits / ``temperature``, then
    ``tanh_constant * tanh(.)``."""

    def __init__(self, bounds: np.ndarray, hidden: int, temperature: Optional[float] = None,
                 tanh_constant: Optional[float] = None) -> None:
        super().__init__()
        self.bounds = [int(b) for b in bounds]
        self.temperature, self.tanh_constant = temperature, tanh_constant
        self.start = nn.Parameter(torch.zeros(1, hidden))
        self.lstm = nn.LSTMCell(hidden, hidden)
        self.heads = nn.ModuleList(nn.Linear(hidden, b) for b in self.bounds)
        self.embed = nn.ModuleList(nn.Embedding(b, hidden) for b in self.bounds)
        nn.init.uniform_(self.start, -0.1, 0.1)

    def run(self, mask: Mask, n: int, tokens: Optional[np.ndarray] = None,
            draw: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """(tokens (n, L), log p of each row (n,), summed entropy (n,)):
        teacher-forced on ``tokens`` or drawn with ``draw`` (probabilities
        (n, vocab) -> tokens (n,))."""
        device = self.start.device
        out = np.zeros((n, len(self.bounds)), dtype=np.int64) if tokens is None else np.asarray(tokens, np.int64)
        x, state = self.start.expand(n, -1), None
        logp = torch.zeros(n, device=device)
        entropy = torch.zeros(n, device=device)
        for j, head in enumerate(self.heads):
            state = self.lstm(x, state)
            allowed = torch.as_tensor(mask(j, out[:, :j]), device=device)
            logits = self._shape(head(state[0])).masked_fill(~allowed, float("-inf"))
            log_probs = torch.log_softmax(logits, dim=-1)
            if tokens is None:
                out[:, j] = draw(log_probs.exp().detach().cpu().numpy())
            chosen = torch.as_tensor(out[:, j], device=device)
            logp = logp + log_probs.gather(1, chosen[:, None])[:, 0]
            entropy = entropy - (log_probs.exp() * log_probs.masked_fill(~allowed, 0.0)).sum(-1)
            x = self.embed[j](chosen)
        return out, logp, entropy

    def _shape(self, logits: torch.Tensor) -> torch.Tensor:
        if self.temperature is not None:
            logits = logits / self.temperature
        if self.tanh_constant is not None:
            logits = self.tanh_constant * torch.tanh(logits)
        return logits


def inverse_cdf(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """One token per row of ``probs`` (n, vocab) for uniforms ``u`` (n,)."""
    cdf = np.cumsum(probs.astype(np.float64), axis=1)
    cdf /= cdf[:, -1:]  # ends at exactly 1: a zero-probability (masked) token is never drawn
    return (u[:, None] >= cdf).sum(axis=1)


def reinforce_step(controller: Controller, optimizer: torch.optim.Optimizer, mask: Mask, rows: np.ndarray,
                   rewards: np.ndarray, baseline: float, entropy_weight: float) -> float:
    """One REINFORCE step with the entropy bonus on observed ``rows`` and
    their ``rewards`` against ``baseline``; returns the mean entropy."""
    _, logp, entropy = controller.run(mask, len(rows), tokens=rows)
    advantage = torch.as_tensor(rewards - baseline, dtype=logp.dtype, device=logp.device)
    loss = -(advantage * logp).mean() - entropy_weight * entropy.mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(entropy.detach().mean())


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one intra-op thread for the controller's tiny steps (on a
    loaded 2-core machine several threads made them ~20x slower); the
    runner evaluates no trial meanwhile, so the setting is restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@STRATEGIES.register("rl")
class ReinforceController(MultiTrialStrategy):
    name = "rl"
    Config = RLConfig
    spaces = SpacesOf()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        bounds = self.space.encoding_bounds()
        self.mask: Mask = self.space.allowed_tokens
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.controller = Controller(bounds, self.config.hidden).to(self.device)
        self.optimizer = torch.optim.Adam(self.controller.parameters(), lr=self.config.lr)
        self.baseline: Optional[float] = None

    def propose(self, count: int) -> list[Any]:
        """``count`` children drawn together; one the space rejects is drawn again."""
        with one_thread():
            return [self._valid(row) for row in self._rows(count)]

    def _rows(self, n: int) -> np.ndarray:
        with torch.no_grad():
            return self.controller.run(self.mask, n, draw=self._draw)[0]

    def _valid(self, row: np.ndarray) -> Any:
        for _ in range(self.config.max_resamples):
            try:
                return self.space.decode(row)
            except GenotypeError:
                row = self._rows(1)[0]
        raise StrategyError(f"strategies.rl.max_resamples = {self.config.max_resamples}: every child the "
                            f"controller drew was rejected by space {self.space.name!r}; allow more resamples")

    def _draw(self, probs: np.ndarray) -> np.ndarray:
        """One token per row by inverse CDF with the seeded ``self.rng``."""
        return inverse_cdf(probs, self.rng.random(len(probs)))

    def observe(self, trials: list[Trial]) -> None:
        super().observe(trials)
        with one_thread():
            self._update(trials)

    def _update(self, trials: list[Trial]) -> None:
        """One REINFORCE step on a round, then the baseline takes its rewards."""
        rewards = np.array([t.score for t in trials])
        if self.baseline is None:
            self.baseline = float(rewards.mean())
        rows = np.stack([self.space.encode(t.genotype) for t in trials])
        mean_entropy = reinforce_step(self.controller, self.optimizer, self.mask, rows, rewards, self.baseline,
                                      self.config.entropy_weight)
        before = self.baseline
        for t, r in zip(trials, rewards):
            self.signals[t.index] = {"reward": float(r), "baseline": before, "advantage": float(r - before),
                                     "entropy": mean_entropy}
            self.baseline = self.config.baseline_decay * self.baseline + (1 - self.config.baseline_decay) * float(r)
