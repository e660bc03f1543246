"""DSO-NAS (Zhang et al., TPAMI 2021, dso-nas.md): NAS as pruning of a
completely connected block network by sparse optimisation of a scaling
factor λ per connection (nas_core.supernet.dso), Algorithm 1.

* D~ is split into D_w (``train_w``, ``weight_fraction``: CIFAR 25K/25K ->
  0.5) and D_λ (``train_a``).
* λ = 1, BatchNorm scales fixed to 1 (pre-training and search).
* Epochs 0..``warmup_epochs``-1 pre-train the complete network on D_w
  (weights only).
* Then, per batch of D_w: one APG-NAG step of λ on the next batch of D_λ
  (Eqs. 13-16, soft-threshold S_{ηγ}), then one NAG step of W on the D_w
  batch (SGD with Nesterov momentum, weight decay δ), Algorithm 1 lines 5-6.
  D_λ is re-iterated when shorter than D_w (one epoch = one pass over D_w).

APG-NAG (:func:`apg_nag_update`): with λ' the point the network runs at,
z = λ' − η∇G(λ'), λ_t = max(S_{ηγ}(z), 0), v_t = λ_t − λ' + μ_{t−1}v_{t−1},
λ'_t = λ_t + μ_t v_t, and μ_k = (k − 1)/(k + 2) (Eq. 10/13; ``lambda_momentum``
sets a constant μ instead, as plain NAG does).
Taking the non-negative part after S is the proximal step of γ‖λ‖₁ plus
the constraint λ ≥ 0 of Eq. 8: the iterate λ_t is never negative and is what
the tables, the metrics and the genotype read; the look-ahead λ' (Eq. 16),
where the network runs and the next gradient is taken, can dip below 0 for
a step while a connection is being driven to 0, as in APG. A connection
whose λ_t reaches 0 is pruned for the rest of the search (its λ, λ' and
velocity stay 0) and the nodes it isolates are removed; the architecture is
the set of connections alive.

Budgets (§3.4), γ per connection, recomputed before every λ step:

* ``fixed``: γ everywhere;
* ``flops`` (Eq. 17): γ_s = FLOPs^t_s / FLOPs_block,s · γ per block structure
  (full scope: per block; share scope: the blocks sharing the structure,
  summed);
* ``mac`` (Eq. 18): a connection into op (m, n) gets MAC_(m,n) / MAC_max · γ,
  MAC from nas_core.spaces.dso.ops (input + output maps + weights); a
  connection into the block output gets R's MAC over the nodes that feed it
  now. Share scope sums an op's MAC over the blocks sharing it;
* ``latency`` (Eq. 19): γ_e = (Δ_e − Δ_min)/(Δ_max − Δ_min)·γ + γ_0 over the
  kept connections, Δ_e the drop of the network's modelled latency when
  connection e is removed (nas_core.spaces.dso.latency; the paper names
  LAT "the latency of the network when the connection is pruned" but
  defines a connection's latency as this drop, and only the drop makes
  connections that cost more time weigh more), set at the start of every
  search epoch ("adjusted every epoch"). The table is the space's
  (``with_measurements``), measured in ``setup`` when it has none, and kept
  in the checkpoint so a resumed run uses the same numbers.

Defaults are the paper's CIFAR-10 search: 120 pre-training + 120 search
epochs, batch 128, constant learning rate 0.1 for W and λ, NAG momentum
0.9, weight decay 3e-4, adaptive FLOPs. The paper does not state γ: 0.01
is this project's choice (ηγ = 1e-3 per step over the ~23K λ steps of the
CIFAR search).

Resume: data order comes from the loaders' own generators, reseeded per
epoch (``train_a``: ``+ 2**20``); nothing else draws random numbers after
``setup`` (which builds the supernet under ``seed`` without moving the
global RNG). A checkpoint holds W, λ', the alive mask (in the supernet),
both optimisers' states (APG velocity, iterate and step count included),
the RNG states and the history, so a resumed run is bit-identical on the CPU.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from nas_core.sections import CrossFieldError
from nas_core.spaces.dso import DSOGenotype, DSOSpace
from nas_core.spaces.dso.latency import DSOLatencyTable, measure_latency_table
from nas_core.spaces.dso.plots import blocks_figure, lambda_curves
from nas_core.strategies.base import STRATEGIES, OneShotConfig, OneShotStrategy, SearchData, SearchResult, SpacesOf
from nas_core.supernet.dso import DSOSupernet
from nas_core.train.checkpoint import rng_state, set_rng_state
from nas_core.train.loop import check_finite, default_progress, evaluate, forever, reseed

ARCH_SEED_OFFSET = 2**20
SECTION = "strategies.dso_nas"


class DSONASConfig(OneShotConfig):
    """``strategies.dso_nas`` (defaults: the paper's CIFAR-10 search; the
    module docstring gives the departures)."""

    epochs: int = Field(240, ge=1, description="pre-training + search epochs")
    warmup_epochs: int = Field(120, ge=0, description="epochs pre-training the complete network on D_w")
    weight_fraction: float = Field(0.5, gt=0.0, lt=1.0, description="share of D~ in D_w (the rest: D_λ)")
    batch_size: int = Field(128, ge=1)
    w_lr: float = Field(0.1, gt=0, description="constant NAG learning rate of W")
    w_momentum: float = Field(0.9, gt=0, lt=1, description="NAG momentum of W")
    w_weight_decay: float = Field(3e-4, ge=0, description="δ")
    lambda_lr: float = Field(0.1, gt=0, description="η, constant APG-NAG step of λ")
    lambda_momentum: Optional[float] = Field(None, ge=0, lt=1,
                                             description="null: μ_k = (k-1)/(k+2) (Eq. 13); else constant")
    gamma: float = Field(0.01, ge=0, description="γ, weight of the l1 penalty on λ")
    budget: Literal["fixed", "flops", "mac", "latency"] = "flops"
    gamma0: float = Field(0.0, ge=0, description="γ_0 of Eq. 19 (budget: latency), added to every connection")

    @model_validator(mode="after")
    def _search_after_warmup(self) -> "DSONASConfig":
        if self.warmup_epochs >= self.epochs:
            raise CrossFieldError(f"{SECTION}.warmup_epochs", self.warmup_epochs,
                                  f"must be less than {SECTION}.epochs = {self.epochs}, or λ is never searched")
        return self


# ---------------------------------------------------------------- APG-NAG

def soft_threshold(z: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """S_α(z)_i = sign(z_i)(|z_i| − α)_+."""
    return torch.sign(z) * (z.abs() - alpha).clamp_min(0.0)


def apg_momentum(k: int, constant: Optional[float] = None) -> float:
    """μ_k: ``constant``, or (k − 1)/(k + 2) (0 for k <= 1)."""
    if constant is not None:
        return float(constant)
    return max(0.0, (k - 1) / (k + 2))


def apg_nag_update(lam_prime: torch.Tensor, grad: torch.Tensor, velocity: torch.Tensor, lr: float,
                   gamma: torch.Tensor | float, mu_prev: float,
                   mu_next: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One APG-NAG step (Eqs. 14-16) from the look-ahead point ``lam_prime``
    with gradient ``grad`` there: (λ_t, v_t, λ'_t)."""
    z = lam_prime - lr * grad
    lam = soft_threshold(z, lr * gamma).clamp_min(0.0)
    velocity = lam - lam_prime + mu_prev * velocity
    return lam, velocity, lam + mu_next * velocity


class APGNAG:
    """APG-NAG on one parameter (λ') with permanent pruning: ``step``
    updates λ' in place from its ``.grad`` and clears ``alive`` where λ_t
    reaches 0. State: velocity, iterate λ_t and the step count."""

    def __init__(self, param: torch.nn.Parameter, lr: float, momentum: Optional[float] = None) -> None:
        self.param, self.lr, self.momentum = param, lr, momentum
        self.velocity = torch.zeros_like(param.detach())
        self.iterate = param.detach().clone()
        self.steps = 0

    @torch.no_grad()
    def step(self, gamma: torch.Tensor | float, alive: torch.Tensor) -> int:
        """One step; returns how many connections it pruned."""
        if self.param.grad is None:
            raise RuntimeError("APG-NAG step without a gradient on λ")
        t = self.steps + 1
        lam, velocity, lam_prime = apg_nag_update(self.param, self.param.grad, self.velocity, self.lr, gamma,
                                                  apg_momentum(t - 1, self.momentum), apg_momentum(t, self.momentum))
        pruned = alive & (lam <= 0)
        alive &= lam > 0
        keep = alive.to(lam.dtype)
        self.iterate, self.velocity = lam * keep, velocity * keep
        self.param.copy_(lam_prime * keep)
        self.steps = t
        return int(pruned.sum())

    def state_dict(self) -> dict[str, Any]:
        return {"velocity": self.velocity.clone(), "iterate": self.iterate.clone(), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.velocity = state["velocity"].to(self.param.device).clone()
        self.iterate = state["iterate"].to(self.param.device).clone()
        self.steps = int(state["steps"])


# ---------------------------------------------------------------- budgets

def latency_gamma(drops: np.ndarray, kept: np.ndarray, gamma: float, gamma0: float) -> np.ndarray:
    """Eq. 19: (Δ − Δ_min)/(Δ_max − Δ_min)·γ + γ_0 per kept connection from
    its latency drop Δ (all equal: γ + γ_0); γ_0 for pruned ones."""
    kept = np.asarray(kept, dtype=bool)
    if not kept.any():
        return np.full(kept.shape, gamma0)
    low, high = drops[kept].min(), drops[kept].max()
    ratio = (drops - low) / (high - low) if high > low else np.ones(kept.shape)
    return np.where(kept, ratio * gamma + gamma0, gamma0)


def budget_gamma(space: DSOSpace, kept: np.ndarray, gamma: float, budget: str,
                 complete_flops: Optional[np.ndarray] = None, gamma0: float = 0.0) -> np.ndarray:
    """γ per connection (structures, E) for ``budget`` (module docstring)
    given the connections still ``kept``; ``latency`` needs the space's
    latency table."""
    shape = kept.shape
    if budget == "fixed":
        return np.full(shape, gamma)
    if budget == "flops":
        full = space.structure_flops(np.ones(shape, dtype=bool)) if complete_flops is None else complete_flops
        ratio = np.divide(space.structure_flops(kept), full, out=np.zeros(len(full)), where=full > 0)
        return np.repeat((ratio * gamma)[:, None], shape[1], axis=1)
    if budget == "mac":
        macs = space.node_macs(kept)
        top = macs.max()
        targets = space.graph.targets
        return gamma * macs[:, targets] / top if top > 0 else np.zeros(shape)
    if budget == "latency":
        if space.latency is None:
            raise ValueError(f"{SECTION}.budget = 'latency' needs the space's latency table (with_measurements)")
        return latency_gamma(space.latency.connection_drops(space, kept), kept, gamma, gamma0)
    raise ValueError(f"{SECTION}.budget = {budget!r}: allowed fixed, flops, mac, latency")


@STRATEGIES.register("dso_nas")
class DSONASStrategy(OneShotStrategy):
    """DSO-NAS over a :class:`DSOSpace` (module docstring)."""

    name = "dso_nas"
    spaces = SpacesOf("dso")
    Config = DSONASConfig

    def __init__(self, space: DSOSpace, config: DSONASConfig, device: torch.device, seed: int = 0) -> None:
        super().__init__(space, config, device, seed)
        self.progress: Callable[..., Any] | None = default_progress
        self.lambda_history: list[torch.Tensor] = []

    def num_epochs(self) -> int:
        return self.config.epochs

    def setup(self, data: Optional[SearchData]) -> None:
        c = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.supernet = DSOSupernet(self.space).to(self.device)
        self.w_optimizer = torch.optim.SGD(self.supernet.weight_parameters(), lr=c.w_lr, momentum=c.w_momentum,
                                           nesterov=True, weight_decay=c.w_weight_decay)
        self.apg = APGNAG(self.supernet.lam, c.lambda_lr, c.lambda_momentum)
        self.complete_flops = self.space.structure_flops(np.ones(self.supernet.alive.shape, dtype=bool))
        if c.budget == "latency" and self.space.latency is None:
            table = measure_latency_table(self.space, self.device, self.space.latency_repeats)
            self.space = replace(self.space, latency=table)
        self._epoch_gamma: Optional[np.ndarray] = None

    # ------------------------------------------------------------ steps
    def gamma_tensor(self) -> torch.Tensor:
        """γ per connection now (``latency``: as set at the epoch's start)."""
        c = self.config
        if c.budget == "latency" and self._epoch_gamma is not None:
            gamma = self._epoch_gamma
        else:
            gamma = budget_gamma(self.space, self.supernet.kept(), c.gamma, c.budget, self.complete_flops, c.gamma0)
        return torch.as_tensor(gamma, dtype=self.supernet.lam.dtype, device=self.device)

    def lambda_step(self, x: torch.Tensor, y: torch.Tensor, epoch: int, step: int) -> tuple[float, int, int]:
        """One APG-NAG step of λ on a D_λ batch: (loss, correct, pruned)."""
        lam = self.supernet.lam
        logits = self.supernet(x)
        loss = F.cross_entropy(logits, y)
        check_finite(loss.detach(), epoch, step)
        (grad,) = torch.autograd.grad(loss, [lam], allow_unused=True)  # None once everything is pruned
        lam.grad = torch.zeros_like(lam) if grad is None else grad
        pruned = self.apg.step(self.gamma_tensor(), self.supernet.alive)
        lam.grad = None
        return float(loss.detach()), int((logits.argmax(1) == y).sum()), pruned

    def weight_step(self, x: torch.Tensor, y: torch.Tensor, epoch: int, step: int) -> tuple[float, int]:
        """One NAG step of W on a D_w batch: (loss, correct)."""
        weights = self.supernet.weight_parameters()
        logits = self.supernet(x)
        loss = F.cross_entropy(logits, y)
        check_finite(loss.detach(), epoch, step)
        self.w_optimizer.zero_grad(set_to_none=True)
        for p, g in zip(weights, torch.autograd.grad(loss, weights, allow_unused=True)):
            p.grad = g  # None for the weights of pruned nodes: SGD skips them
        self.w_optimizer.step()
        return float(loss.detach()), int((logits.argmax(1) == y).sum())

    def train_epoch(self, epoch: int, data: SearchData) -> dict[str, float]:
        searching = epoch >= self.config.warmup_epochs
        reseed(data.train_w, self.seed + epoch)
        reseed(data.train_a, self.seed + epoch + ARCH_SEED_OFFSET)
        arch = forever(data.train_a, "train_a (D_λ; lower weight_fraction)") if searching else None
        self._epoch_gamma = None  # Eq. 19's γ is adjusted once per epoch
        if searching and self.config.budget == "latency":
            self._epoch_gamma = self.gamma_tensor().cpu().numpy()
        self.supernet.train()
        sums = dict(n=0, loss=0.0, correct=0, an=0, aloss=0.0, acorrect=0, pruned=0)
        desc = f"epoch {epoch + 1} {'search' if searching else 'pre-train'}"
        batches = self.progress(data.train_w, desc=desc, total=len(data.train_w)) if self.progress \
            else data.train_w
        for step, (x, y) in enumerate(batches, start=1):
            if arch is not None:
                xa, ya = (t.to(self.device) for t in next(arch))
                loss, correct, pruned = self.lambda_step(xa, ya, epoch, step)
                sums.update(an=sums["an"] + len(ya), aloss=sums["aloss"] + loss * len(ya),
                            acorrect=sums["acorrect"] + correct, pruned=sums["pruned"] + pruned)
            x, y = x.to(self.device), y.to(self.device)
            loss, correct = self.weight_step(x, y, epoch, step)
            sums.update(n=sums["n"] + len(y), loss=sums["loss"] + loss * len(y), correct=sums["correct"] + correct)
        metrics = {"loss": sums["loss"] / max(sums["n"], 1), "acc": sums["correct"] / max(sums["n"], 1),
                   "searching": float(searching), "pruned": float(sums["pruned"])}
        if searching:
            metrics.update(lambda_loss=sums["aloss"] / max(sums["an"], 1),
                           lambda_acc=sums["acorrect"] / max(sums["an"], 1))
        if data.val is not None:
            v = evaluate(self.supernet, data.val, self.device)
            metrics.update(val_loss=v["loss"], val_acc=v["acc"])
        metrics.update(self.network_metrics())
        self.lambda_history.append(self.lambdas().detach().cpu().clone())
        return metrics

    def lambdas(self) -> torch.Tensor:
        """The current iterate λ_t (structures, E), 0 where pruned."""
        return self.apg.iterate

    def network_metrics(self) -> dict[str, float]:
        """Sparsity (share of connections pruned), ``kept_block<b>`` (the
        connections normal block b still runs: kept and not isolated), mean
        λ and γ, and FLOPs / MAC / params (and latency with a table) of the
        current network at the search width."""
        kept = self.supernet.kept()
        genotype = self.current_genotype()
        cost = self.space.cost(genotype, width_multiplier=1.0)
        used = self.space.block_masks(kept)
        out = {"sparsity": float(1.0 - kept.mean()), "kept": float(kept.sum()),
               "flops": float(cost["flops"]), "mac": float(cost["mac"]), "params": float(cost["params"]),
               "lambda_mean": float(self.lambdas().cpu()[torch.as_tensor(kept)].mean()) if kept.any() else 0.0,
               "gamma_mean": float(self.gamma_tensor().mean())}
        if cost["latency_ms"] is not None:
            out["latency_ms"] = float(cost["latency_ms"])
        out.update({f"kept_block{b}": float(used[b].sum()) for b in range(self.space.num_blocks)})
        return out

    def current_genotype(self) -> DSOGenotype:
        return self.space.genotype_from_masks(self.supernet.kept())

    # ------------------------------------------------------------ results
    def tables(self) -> dict[str, np.ndarray]:
        """``connections``: (p pruned, p kept) per connection from the
        normalised λ (DSOSpace.tables_from_lambda)."""
        return self.space.tables_from_lambda(self.lambdas().detach().cpu().numpy())

    def derive(self) -> SearchResult:
        genotype = self.current_genotype()
        lam = self.lambdas().detach().cpu().numpy()
        return SearchResult(genotype=genotype, tables=self.tables(), history=list(self.history),
                            extras={"lambda": lam, "cost": self.space.cost(genotype)})

    def lambda_history_array(self) -> np.ndarray:
        """λ_t after every finished epoch: (epochs, structures, E)."""
        if not self.lambda_history:
            return np.zeros((0, *self.supernet.lam.shape), dtype=np.float32)
        return torch.stack(self.lambda_history).numpy()

    def arrays(self) -> dict[str, np.ndarray]:
        return {"lambda_history": self.lambda_history_array()}

    def figures(self, result: SearchResult) -> dict[str, Any]:
        """Keep probabilities, λ per connection over the epochs and the final
        blocks drawn with their kept edges (width ∝ λ)."""
        figures = super().figures(result)
        figures["lambda_history.png"] = lambda_curves(self.lambda_history_array(), f"{self.name}: λ per connection")
        figures["blocks.png"] = blocks_figure(self.space.graph, result.genotype.masks(),
                                              self.space.label(result.genotype)[:80], result.extras["lambda"])
        return figures

    def progress_postfix(self, metrics: dict[str, float]) -> dict[str, str]:
        return {**super().progress_postfix(metrics), "sparsity": f"{metrics['sparsity']:.2f}"}

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"supernet": self.supernet.state_dict(), "epoch": self.epoch,
                "w_optimizer": self.w_optimizer.state_dict(), "apg": self.apg.state_dict(),
                "rng": rng_state(), "history": [dict(h) for h in self.history],
                "lambda_history": torch.from_numpy(self.lambda_history_array()),
                "space": {"name": self.space.name, "scope": self.space.scope,
                          "encoding_length": self.space.encoding_length},
                "latency_table": "" if self.space.latency is None else self.space.latency.to_json()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.supernet.load_state_dict(state["supernet"])
        self.w_optimizer.load_state_dict(state["w_optimizer"])
        self.apg.load_state_dict(state["apg"])
        set_rng_state(state["rng"])
        self.epoch = int(state["epoch"])
        self.history = [dict(h) for h in state["history"]]
        self.lambda_history = list(state["lambda_history"].unbind(0))
        if state.get("latency_table"):  # the table the run trained with, not a new measurement
            self.space = replace(self.space, latency=DSOLatencyTable.from_json(state["latency_table"]))

