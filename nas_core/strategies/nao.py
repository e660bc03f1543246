"""Neural Architecture Optimization (NAONet; Luo et al., NeurIPS 2018) as a
multi-trial strategy: search in a learned continuous embedding of genotypes.

The model (:class:`NAOModel`), over the token rows of ``space.encode``:

* encoder: token embeddings -> a one-layer LSTM whose hidden states
  e_x = (h_1 .. h_T) are the architecture's continuous representation;
* predictor f: the mean-pooled state, one hidden layer of ``mlp_hidden``
  ReLU units, a sigmoid output (the survey and the issue: one layer; NAO's
  released code stacks three);
* decoder: a one-layer LSTM started from (mean state, mean state), reading
  the previous token's embedding, with attention over e_x (Luong's
  "general" score, the context combined with the state by a tanh layer),
  emitting the sequence token by token.

It is trained on every observed (genotype, score) pair with Adam on
``trade_off * MSE(f, score) + (1 - trade_off) * CE(reconstruction)``
(NAO's lambda = 0.8), the decoder teacher-forced, gradients clipped to norm
``grad_clip``.

The loop. The first ``seed_trials`` trials are unique random genotypes
(``space.random``). After every observed round from then on the model is
trained for ``train_epochs`` more epochs on all trials so far (warm start:
it is the same model throughout, as in NAO's iterations). A round of new
candidates takes the ``top_k`` trials by score, moves every state of each
one's e_x by gradient ascent on f, ``e' = e + eta * df/de``, decodes e'
greedily and keeps the decodes that are new (never evaluated, not proposed
this round), in seed order (``seed_trials`` >= ``trials`` makes it a
random search). Like NAO's search script, eta starts at
``step_size`` and grows by ``step_size`` until the round is full, at most
``max_steps`` times.

Choices where the paper is vague or does not fit, stated:

* Vocabulary. Position j has its own ``space.encoding_bounds()[j]``
  tokens, as in the rl controller: its own rows of the embedding tables and
  its own columns of the output layer (one table and one layer, offset by
  the earlier positions' bounds, like NAO's vocabulary of input and op
  tokens with offsets), and position j's softmax runs over its own columns
  only, so a decode is always in bounds.
* Invalid decodes. Where the space constrains its rows
  (``space.allowed_tokens``: the cell spaces' canonical order) the decoder
  is masked with them (in training and decoding), so every decode is a
  valid row. On other spaces a decode ``space.decode`` rejects is replaced
  by ``space.mutate`` of the seed architecture it was moved from (a valid
  neighbour of the point NAO started at), then tested for novelty.
* Shortfall. If the eta schedule yields fewer new genotypes than the round
  wants, the rest are unique random genotypes (at most ``max_resamples``
  draws each; a space with nothing new left ends the round short).
* Scores are min-max normalised over the observed trials before the MSE
  (as NAO's search script does with accuracies); predictions are mapped
  back to score units for the history.
* No dropout and no symmetric-input data augmentation (NAO uses both on
  thousands of pairs); the model's only randomness is its seeded
  initialisation and the seeded minibatch order, so a replayed search
  retrains to the same weights and proposes the same genotypes (resume).
* Published settings are the Config defaults: NAO's search script (token
  embedding 48, LSTMs 96, predictor 200 units, lambda 0.8, 1000 epochs of
  batch 100 with Adam 1e-3 and weight decay 1e-4, gradient clip 5, top 100
  seeds, eta += 1 up to 100 times, 1000 random seed architectures);
  ``params.yaml`` scales them to digits' few dozen trials.

History: every trial observed once the model trains holds
``predictor_loss`` (MSE on the normalised scores), ``reconstruction_loss``
(cross-entropy per token) and ``reconstruction_accuracy`` (the fraction of
trials so far that greedy decoding of their own e_x reproduces exactly), all
after the training that included it (the last round's trials: of the
model as it stands, not trained on them, since nothing is proposed after
them); a trial proposed by a trained model also holds ``predicted`` (f of
its encoding, in score units) and, when it came from the gradient step,
``eta``, the step size that produced it (or, for a decode the space
rejected, the eta at which its seed was mutated).
"""
from __future__ import annotations

from typing import Any, Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from nas_core.spaces.base import GenotypeError, constrains_tokens
from nas_core.strategies.base import STRATEGIES, SpacesOf, StrategyError
from nas_core.strategies.multi_trial import MultiTrialConfig, MultiTrialStrategy, Trial
from nas_core.strategies.rl import Mask, one_thread


class NAOConfig(MultiTrialConfig):
    """``strategies.nao``: random ``seed_trials`` before the model proposes,
    ``top_k`` seeds of the gradient step, ``step_size`` eta and its
    ``max_steps`` increments; the model's ``embedding``, LSTM ``hidden`` and
    predictor ``mlp_hidden`` widths; its training (``trade_off`` lambda,
    ``train_epochs``, ``train_batch``, ``lr``, ``lr_schedule``,
    ``weight_decay``, ``grad_clip``); ``max_resamples`` random draws per
    shortfall slot.

    ``lr_schedule``: NAO trains at a constant rate (the default). A fitted
    model at a constant rate well above NAO's (params.yaml's 0.005 for a few
    hundred epochs) spikes: full-batch Adam near zero loss takes steps that
    undo the fit for an epoch or two, and whether the last epoch lands on
    one depends on the rounding of the CPU's float kernels (measured: 6
    seeds, 300 epochs, exact reconstruction 0.08-1.00 by kernel set at a
    constant rate; 0.88-1.00 under AVX-512, AVX2 and default kernels alike
    with ``cosine``). ``cosine`` anneals each fit from ``lr`` to 0."""

    seed_trials: int = Field(1000, ge=1)
    top_k: int = Field(100, ge=1)
    step_size: float = Field(1.0, gt=0.0)
    max_steps: int = Field(100, ge=1)
    embedding: int = Field(48, ge=1)
    hidden: int = Field(96, ge=1)
    mlp_hidden: int = Field(200, ge=1)
    trade_off: float = Field(0.8, ge=0.0, le=1.0)
    train_epochs: int = Field(1000, ge=1)
    train_batch: int = Field(100, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    weight_decay: float = Field(1e-4, ge=0.0)
    grad_clip: float = Field(5.0, gt=0.0)
    max_resamples: int = Field(100, ge=1)


class NAOModel(nn.Module):
    """Encoder, performance predictor and attention decoder over token rows
    whose position j takes ``bounds[j]`` values (module docstring). Each
    position's tokens are their own rows of one embedding table and their
    own columns of one output layer (offset by the earlier positions'
    bounds), so a step costs a few large ops rather than one per position."""

    def __init__(self, bounds: np.ndarray, embedding: int, hidden: int, mlp_hidden: int) -> None:
        super().__init__()
        sizes = torch.as_tensor(np.asarray(bounds, dtype=np.int64))
        width = int(sizes.max())
        self.register_buffer("offsets", torch.cumsum(sizes, 0) - sizes, persistent=False)
        self.register_buffer("columns", (self.offsets[:, None] + torch.arange(width)).clamp(max=int(sizes.sum()) - 1),
                             persistent=False)  # (T, width): position j's output columns, padded
        self.register_buffer("in_bounds", torch.arange(width)[None, :] < sizes[:, None], persistent=False)
        self.source = nn.Embedding(int(sizes.sum()), embedding)
        self.encoder = nn.LSTM(embedding, hidden, batch_first=True)
        self.predictor = nn.Sequential(nn.Linear(hidden, mlp_hidden), nn.ReLU(), nn.Linear(mlp_hidden, 1))
        self.start = nn.Parameter(torch.empty(1, 1, embedding).uniform_(-0.1, 0.1))
        self.target = nn.Embedding(int(sizes.sum()), embedding)
        self.decoder = nn.LSTM(embedding, hidden, batch_first=True)
        self.attention = nn.Linear(hidden, hidden, bias=False)
        self.combine = nn.Linear(2 * hidden, hidden)
        self.head = nn.Linear(hidden, int(sizes.sum()))

    def encode(self, rows: torch.Tensor) -> torch.Tensor:
        """e_x: (n, T, hidden) encoder states of token rows (n, T)."""
        return self.encoder(self.source(rows + self.offsets))[0]

    def predict(self, states: torch.Tensor) -> torch.Tensor:
        """f(mean_t h_t) in (0, 1): (n,)."""
        return torch.sigmoid(self.predictor(states.mean(dim=1)))[:, 0]

    def log_probs(self, states: torch.Tensor, inputs: torch.Tensor, state: Any, first: int,
                  allowed: Optional[torch.Tensor]) -> tuple[torch.Tensor, Any]:
        """Log-probabilities (n, t, width) of positions first .. first+t-1
        given the decoder's input embeddings (n, t, E) and LSTM state;
        columns out of a position's bounds or not ``allowed`` get -inf."""
        out, state = self.decoder(inputs, state)
        weights = torch.softmax(self.attention(out) @ states.transpose(1, 2), dim=-1)
        features = torch.tanh(self.combine(torch.cat([out, weights @ states], dim=-1)))
        span = slice(first, first + out.shape[1])
        logits = self.head(features).gather(2, self.columns[span].expand(out.shape[0], -1, -1))
        keep = self.in_bounds[span] if allowed is None else allowed & self.in_bounds[span]
        return torch.log_softmax(logits.masked_fill(~keep, float("-inf")), dim=-1), state

    def initial(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = states.mean(dim=1)[None].contiguous()
        return pooled, pooled

    def reconstruct(self, states: torch.Tensor, rows: torch.Tensor, allowed: Optional[torch.Tensor]) -> torch.Tensor:
        """Teacher-forced log-probabilities (n, T) of ``rows``' tokens;
        ``allowed``: :meth:`allowed` of ``rows`` at every position, or None."""
        n = rows.shape[0]
        inputs = torch.cat([self.start.expand(n, -1, -1), self.target(rows + self.offsets)[:, :-1]], dim=1)
        log_probs, _ = self.log_probs(states, inputs, self.initial(states), 0, allowed)
        return log_probs.gather(2, rows[:, :, None])[:, :, 0]

    def greedy(self, states: torch.Tensor, mask: Optional[Mask]) -> np.ndarray:
        """Token rows (n, T) decoded greedily from e_x."""
        n, length = states.shape[0], len(self.offsets)
        out = np.zeros((n, length), dtype=np.int64)
        inputs, state = self.start.expand(n, -1, -1), self.initial(states)
        for j in range(length):
            allowed = None if mask is None else self.allowed(mask, out, [j])
            log_probs, state = self.log_probs(states, inputs, state, j, allowed)
            chosen = log_probs[:, 0].argmax(dim=-1)
            out[:, j] = chosen.cpu().numpy()
            inputs = self.target(chosen + self.offsets[j])[:, None]
        return out

    def allowed(self, mask: Mask, rows: np.ndarray, positions: Any) -> torch.Tensor:
        """(n, len(positions), width): ``mask`` of each position given the tokens before it."""
        width = self.columns.shape[1]
        out = np.zeros((len(rows), len(positions), width), dtype=bool)
        for k, j in enumerate(positions):
            allowed = mask(j, rows[:, :j])
            out[:, k, :allowed.shape[1]] = allowed
        return torch.as_tensor(out, device=self.offsets.device)


@STRATEGIES.register("nao")
class NeuralArchitectureOptimization(MultiTrialStrategy):
    name = "nao"
    Config = NAOConfig
    spaces = SpacesOf()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mask: Optional[Mask] = self.space.allowed_tokens if constrains_tokens(self.space) else None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.model = NAOModel(self.space.encoding_bounds(), self.config.embedding, self.config.hidden,
                                  self.config.mlp_hidden).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.config.lr,
                                          weight_decay=self.config.weight_decay, foreach=True)
        self.trained = False
        self.low, self.high = 0.0, 1.0  # the score range of the normalisation
        self.pending: dict[int, dict[str, float]] = {}  # signals of proposals, by trial index

    # ---------------------------------------------------------- tensors
    def rows(self, genotypes: list[Any]) -> torch.Tensor:
        return torch.as_tensor(np.stack([self.space.encode(g) for g in genotypes]), dtype=torch.long,
                               device=self.device)

    def targets(self, trials: list[Trial]) -> torch.Tensor:
        scores = torch.tensor([t.score for t in trials], dtype=torch.float32, device=self.device)
        span = self.high - self.low
        return (scores - self.low) / span if span > 0 else torch.full_like(scores, 0.5)

    def predicted_score(self, genotypes: list[Any]) -> np.ndarray:
        """f of each genotype's encoding, in score units."""
        with torch.no_grad():
            p = self.model.predict(self.model.encode(self.rows(genotypes))).cpu().numpy()
        return self.low + p * (self.high - self.low)

    # ---------------------------------------------------------- proposals
    def propose(self, count: int) -> list[Any]:
        with one_thread():
            if self.trained:
                proposals = self._optimise(count)
            else:
                proposals = self._random(min(count, self.config.seed_trials - len(self.trials)), self._seen())
        if not proposals:
            raise StrategyError(f"strategies.nao.max_resamples = {self.config.max_resamples}: no genotype of "
                                f"space {self.space.name!r} that was not evaluated yet was found after "
                                f"{len(self.trials)} trials; lower trials or allow more resamples")
        return proposals

    def _seen(self) -> set[tuple[int, ...]]:
        return {tuple(self.space.encode(t.genotype)) for t in self.trials}

    def _random(self, count: int, seen: set[tuple[int, ...]]) -> list[Any]:
        """Up to ``count`` unique random genotypes not in ``seen`` (which takes them)."""
        out: list[Any] = []
        for _ in range(count):
            for _ in range(self.config.max_resamples):
                genotype = self.space.random(self.rng)
                key = tuple(self.space.encode(genotype))
                if key not in seen:
                    seen.add(key)
                    out.append(genotype)
                    break
        return out

    def _optimise(self, count: int) -> list[Any]:
        """NAO's step: move the top-k trials' embeddings up f, eta growing
        until ``count`` new genotypes are decoded; random ones fill the rest."""
        seen = self._seen()
        seeds = sorted(self.trials, key=lambda t: (-t.score, t.index))[: self.config.top_k]
        states, grad = self.ascent_direction([t.genotype for t in seeds])
        found: list[tuple[Any, float]] = []
        for step in range(1, self.config.max_steps + 1):
            eta = step * self.config.step_size
            for genotype in self.decoded(states + eta * grad, [t.genotype for t in seeds]):
                key = tuple(self.space.encode(genotype))
                if key not in seen and len(found) < count:
                    seen.add(key)
                    found.append((genotype, eta))
            if len(found) == count:
                break
        proposals = [g for g, _ in found] + self._random(count - len(found), seen)
        first, predicted = len(self.trials), self.predicted_score(proposals)
        for i, p in enumerate(predicted):
            self.pending[first + i] = {"predicted": float(p)}
            if i < len(found):
                self.pending[first + i]["eta"] = found[i][1]
        return proposals

    def ascent_direction(self, genotypes: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(e_x, df/de_x) of each genotype: the encoder states and the
        gradient of the predicted score with respect to them."""
        states = self.model.encode(self.rows(genotypes)).detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(self.model.predict(states).sum(), states)
        return states.detach(), grad

    def decoded(self, states: torch.Tensor, seeds: list[Any]) -> list[Any]:
        """Greedy decodes of ``states``; one the space rejects becomes a
        mutation of its seed genotype."""
        with torch.no_grad():
            rows = self.model.greedy(states, self.mask)
        out = []
        for row, seed in zip(rows, seeds):
            try:
                out.append(self.space.decode(row))
            except GenotypeError:
                out.append(self.space.mutate(seed, self.rng))
        return out

    # ---------------------------------------------------------- learning
    def observe(self, trials: list[Trial]) -> None:
        super().observe(trials)
        for t in trials:
            self.signals[t.index] = self.pending.pop(t.index, {})
        if len(self.trials) >= self.config.seed_trials:
            if len(self.trials) < self.config.trials:  # after the last round nothing is proposed
                self.fit(self.trials)
            measured = self.measure(self.trials) if self.trained else {}
            for t in trials:
                self.signals[t.index].update(measured)

    def allowed(self, rows: torch.Tensor) -> Optional[torch.Tensor]:
        """The decoder's mask at every position of ``rows`` (None: no mask)."""
        return None if self.mask is None else self.model.allowed(self.mask, rows.cpu().numpy(), range(rows.shape[1]))

    def losses(self, rows: torch.Tensor, targets: torch.Tensor, allowed: Optional[torch.Tensor]
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(MSE of f on the normalised scores, mean token cross-entropy of
        the teacher-forced reconstruction)."""
        states = self.model.encode(rows)
        log_probs = self.model.reconstruct(states, rows, allowed)
        return F.mse_loss(self.model.predict(states), targets), -log_probs.mean()

    def fit(self, trials: list[Trial]) -> None:
        """``train_epochs`` epochs of the joint loss on ``trials``, minibatches in a seeded order."""
        with one_thread():
            self._fit(trials)

    def _fit(self, trials: list[Trial]) -> None:
        scores = [t.score for t in trials]
        self.low, self.high = float(min(scores)), float(max(scores))
        rows, targets = self.rows([t.genotype for t in trials]), self.targets(trials)
        allowed = self.allowed(rows)
        lam, batch = self.config.trade_off, self.config.train_batch
        schedule = self._schedule(self.config.train_epochs * -(-len(trials) // batch))
        self.model.train()
        for _ in range(self.config.train_epochs):
            order = torch.as_tensor(self.rng.permutation(len(trials)), device=self.device)
            for start in range(0, len(trials), batch):
                pick = order[start:start + batch]
                mse, ce = self.losses(rows[pick], targets[pick], None if allowed is None else allowed[pick])
                self.optimizer.zero_grad()
                (lam * mse + (1 - lam) * ce).backward()
                nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
                self.optimizer.step()
                schedule.step()
        self.model.eval()
        self.trained = True

    def _schedule(self, steps: int) -> Any:
        """The learning rate of one fit: ``lr`` throughout (``constant``, NAO's)
        or annealed from ``lr`` to 0 over the fit's ``steps`` (``cosine``);
        each fit starts again at ``lr``."""
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] = self.config.lr
        if self.config.lr_schedule == "constant":
            return torch.optim.lr_scheduler.ConstantLR(self.optimizer, factor=1.0, total_iters=0)
        return torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=max(steps, 1))

    def measure(self, trials: list[Trial]) -> dict[str, float]:
        """The model's losses on ``trials`` and the fraction it reconstructs exactly."""
        rows = self.rows([t.genotype for t in trials])
        with torch.no_grad(), one_thread():
            mse, ce = self.losses(rows, self.targets(trials), self.allowed(rows))
            decoded = self.model.greedy(self.model.encode(rows), self.mask)
        exact = float(np.mean((decoded == rows.cpu().numpy()).all(axis=1)))
        return {"predictor_loss": float(mse), "reconstruction_loss": float(ce), "reconstruction_accuracy": exact}
