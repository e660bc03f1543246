"""DARTS (Liu et al., ICLR 2019): differentiable search on the cell space,
and the base of the other cell strategies (PC-DARTS, P-DARTS, GDAS, SNAS),
which change only how op weights are made from alpha, the network they
build, or the loss.

Bi-level optimisation, alternating one step each per batch of ``train_w``:
- alpha (Adam, lr 3e-4, betas (0.5, 0.999), wd 1e-3) on a batch of
  ``train_a`` (DARTS's validation half). Order 1: grad_alpha L_val(w, alpha).
  Order 2 (DARTS Eq. 7-8): with w' = w - xi * grad_w L_train(w, alpha),
  grad = grad_alpha L_val(w', alpha)
         - xi * (grad_alpha L_train(w+, alpha) - grad_alpha L_train(w-, alpha)) / (2 eps),
  w+- = w +- eps * grad_w' L_val(w', alpha), eps = 0.01 / ||grad_w' L_val||.
  xi is the current weight learning rate unless ``unrolled_xi`` is set.
  The virtual step is the paper's plain gradient step (the DARTS code also
  folds momentum and weight decay into it; we follow the equation).
- weights w (SGD, momentum 0.9, wd 3e-4, grad-norm clip 5, lr cosine-
  annealed from ``w_lr`` to ``w_lr_min`` over the epochs) on ``train_w``.

Defaults are DARTS's CIFAR-10 search (reference-notes.md): 8 cells, 16
initial channels, 50 epochs, batch 64. Choices: ``train_a`` is re-iterated
when it is shorter than ``train_w`` (one epoch = one pass over ``train_w``);
alpha updates start after ``warmup_epochs`` (PC-DARTS's warm-up; 0 in
DARTS); the unrolled passes run on copies of the BN running statistics so
they do not disturb them. The global torch RNG is seeded with ``seed`` in
``setup`` (weights and alpha initialisation) and its state is part of
``state_dict``; the loaders of :meth:`DartsStrategy.search_data` shuffle
with it, so Gumbel noise and data order resume identically.

Under torchrun the strategy's :meth:`~DartsStrategy.data_parallel` variant
(:class:`DataParallelCell` mixed in) averages every gradient over the ranks.
"""
from __future__ import annotations

import copy
import functools
import time
from typing import Any, ClassVar, Literal, Optional

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from nas_core.sections import CrossFieldError, Section
from nas_core.spaces.cell import KINDS, NUM_EDGES, SKIP, CellGenotype, CellSpace, derive_genotype
from nas_core.strategies.base import STRATEGIES, OneShotConfig, OneShotStrategy, SearchData, SearchResult, SpacesOf
from nas_core.strategies.data_parallel import ResumeFromRank0
from nas_core.supernet.cell import ArchParams, MixWeights, SearchNetwork, full_edge_ops
from nas_core.train.checkpoint import rng_state, set_rng_state
from nas_core.train.distributed import average_over_ranks, broadcast_, mean_over_ranks, sync_buffers
from nas_core.train.loop import check_finite, forever, memory_metrics


class DartsFamilyConfig(OneShotConfig):
    """Keys every DARTS-family strategy reads (defaults: DARTS's CIFAR-10
    search). ``section`` names the params section in error messages."""

    section: ClassVar[str] = "darts"

    init_channels: int = Field(16, ge=2)
    epochs: int = Field(50, ge=1)
    batch_size: int = Field(64, ge=1)
    w_lr: float = Field(0.025, gt=0)
    w_lr_min: float = Field(0.001, ge=0)
    w_momentum: float = Field(0.9, ge=0, lt=1)
    w_weight_decay: float = Field(3e-4, ge=0)
    w_grad_clip: float = Field(5.0, gt=0)
    arch_lr: float = Field(3e-4, gt=0)
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = Field(1e-3, ge=0)
    warmup_epochs: int = Field(0, ge=0, description="epochs before alpha is first updated")

    @model_validator(mode="after")
    def _schedules_fit(self) -> "DartsFamilyConfig":
        key = f"strategies.{self.section}."
        if self.warmup_epochs >= self.epochs:
            raise CrossFieldError(key + "warmup_epochs", self.warmup_epochs,
                                  f"must be < {key}epochs ({self.epochs}), or alpha is never trained")
        if self.w_lr_min > self.w_lr:
            raise CrossFieldError(key + "w_lr_min", self.w_lr_min, f"must be <= {key}w_lr ({self.w_lr})")
        return self


class SecondOrderKeys(Section):
    """DARTS's order (1: first-order; 2: unrolled, Eq. 7-8) and the virtual
    step ``unrolled_xi`` (None: the current weight learning rate)."""

    order: Literal[1, 2] = 1
    unrolled_xi: Optional[float] = Field(None, gt=0)


class DartsConfig(SecondOrderKeys, DartsFamilyConfig):
    """``strategies.darts``: the proxy network has ``cells`` cells."""

    section: ClassVar[str] = "darts"
    cells: int = Field(8, ge=1)


@STRATEGIES.register("darts")
class DartsStrategy(OneShotStrategy):
    """DARTS over a :class:`CellSpace` (module docstring); ``self.supernet``
    is the :class:`SearchNetwork`, ``self.arch`` alpha (and beta)."""

    name = "darts"
    spaces = SpacesOf("cell")
    space_type: ClassVar[type] = CellSpace  # the space class a subclass searches (DNAS-CAM: the global cell space)
    Config = DartsConfig

    def __init__(self, space: CellSpace, config: Any, device: torch.device, seed: int = 0) -> None:
        if not isinstance(space, self.space_type):
            raise TypeError(f"strategy {self.name!r} searches the {self.spaces[0]!r} space: expected a "
                            f"{self.space_type.__name__}, got {type(space).__name__} "
                            f"(set search.space to {self.spaces[0]!r})")
        super().__init__(space, config, device, seed)
        self.op_names = tuple(space.op_names)

    @classmethod
    def data_parallel(cls) -> type["DartsStrategy"]:
        return cls if issubclass(cls, DataParallelCell) else _cell_variant(cls)

    # ------------------------------------------------------------ building
    def num_epochs(self) -> int:
        return self.config.epochs

    def search_data(self, train_w: Dataset, train_a: Dataset, val: Dataset, num_workers: int = 0) -> SearchData:
        """Loaders shuffling with the global torch RNG (saved in
        :meth:`state_dict`, so a resumed run sees the same batches)."""
        c = self.config
        return SearchData(DataLoader(train_w, batch_size=c.batch_size, shuffle=True, num_workers=num_workers),
                          DataLoader(train_a, batch_size=c.arch_batch_size or c.batch_size, shuffle=True,
                                     num_workers=num_workers),
                          DataLoader(val, batch_size=c.batch_size, num_workers=num_workers))

    def setup(self, data: Optional[SearchData]) -> None:
        torch.manual_seed(self.seed)
        self.edge_ops = full_edge_ops(self.op_names)
        self._build(self.config.cells, self.config.epochs)

    def partial_k(self) -> int:
        return 1

    def edge_norm(self) -> bool:
        return False

    def second_order(self) -> bool:
        return self.config.order == 2

    def _build(self, cells: int, schedule_epochs: int) -> None:
        cfg = self.config
        self.supernet = SearchNetwork(self.op_names, self.space.input_channels, self.space.num_classes,
                                      cfg.init_channels, cells, self.edge_ops, self.partial_k()).to(self.device)
        self.arch = ArchParams(len(self.edge_ops["normal"][0]), self.edge_norm()).to(self.device)
        self.w_opt = torch.optim.SGD(self.supernet.parameters(), lr=cfg.w_lr, momentum=cfg.w_momentum,
                                     weight_decay=cfg.w_weight_decay)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_opt, T_max=schedule_epochs,
                                                                eta_min=cfg.w_lr_min)
        self.a_opt = torch.optim.Adam(self.arch.parameters(), lr=cfg.arch_lr, betas=tuple(cfg.arch_betas),
                                      weight_decay=cfg.arch_weight_decay)

    # ------------------------------------------------------------ op weights
    def mix(self, kind: str) -> MixWeights:
        """Op weights used in training forwards (DARTS: softmax of alpha)."""
        return MixWeights(F.softmax(self.arch.alpha(kind), dim=-1), self.arch.edge_weights(kind))

    def eval_mix(self, kind: str) -> MixWeights:
        """Op weights for evaluation (deterministic)."""
        return MixWeights(F.softmax(self.arch.alpha(kind), dim=-1), self.arch.edge_weights(kind))

    def penalty(self, mixes: dict[str, MixWeights]) -> torch.Tensor | float:
        """Extra loss term on the op weights (SNAS's resource cost)."""
        return 0.0

    def _loss(self, x: torch.Tensor, y: torch.Tensor, params: Optional[dict] = None,
              detach_arch: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        mixes = {kind: self.mix(kind) for kind in KINDS}
        if detach_arch:
            mixes = {k: MixWeights(*(None if t is None else t.detach() for t in (m.ops, m.edges, m.index)))
                     for k, m in mixes.items()}
        args = (x, mixes["normal"], mixes["reduce"])
        if params is None:
            logits = self.supernet(*args)
        else:
            buffers = {n: b.clone() for n, b in self.supernet.named_buffers()}
            logits = functional_call(self.supernet, {**params, **buffers}, args)
        return F.cross_entropy(logits, y) + self.penalty(mixes), logits

    # ------------------------------------------------------------ steps
    def grads(self, loss: torch.Tensor, params: list[torch.Tensor],
              unused_as_none: bool = False) -> list[Optional[torch.Tensor]]:
        """d loss / d params, zeros (or None) for params the loss does not
        use. Every gradient of the search goes through here (the data-parallel
        variant averages them over the ranks)."""
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return list(grads) if unused_as_none else [_zero_if_none(g, p) for g, p in zip(grads, params)]

    def arch_grads(self, xw, yw, xa, ya) -> list[torch.Tensor]:
        """Gradient of the architecture objective w.r.t. ``self.arch`` params
        (order 1 or the order-2 unrolled approximation)."""
        arch = list(self.arch.parameters())
        if not self.second_order():
            loss, _ = self._loss(xa, ya)
            return self.grads(loss, arch)
        return self.unrolled_arch_grads(xw, yw, xa, ya, self._xi())

    def _xi(self) -> float:
        return self.config.unrolled_xi or self.w_opt.param_groups[0]["lr"]

    def unrolled_arch_grads(self, xw, yw, xa, ya, xi: float, r: float = 0.01) -> list[torch.Tensor]:
        arch = list(self.arch.parameters())
        w = dict(self.supernet.named_parameters())
        train_loss, _ = self._loss(xw, yw, w, detach_arch=True)
        g = self.grads(train_loss, list(w.values()))
        w1 = {n: (p - xi * gi).detach().requires_grad_(True) for (n, p), gi in zip(w.items(), g)}
        val_loss, _ = self._loss(xa, ya, w1)
        grads = self.grads(val_loss, arch + list(w1.values()))
        d_alpha, d_w = grads[:len(arch)], grads[len(arch):]
        eps = r / torch.cat([t.flatten() for t in d_w]).norm().clamp_min(1e-12)
        hvp = []
        for sign in (1.0, -1.0):
            shifted = {n: (p + sign * eps * d).detach() for (n, p), d in zip(w.items(), d_w)}
            hvp.append(self.grads(self._loss(xw, yw, shifted)[0], arch))
        return [da - xi * (gp - gm) / (2 * eps) for da, gp, gm in zip(d_alpha, *hvp)]

    def _arch_step(self, xw, yw, xa, ya) -> None:
        grads = self.arch_grads(xw, yw, xa, ya)
        self.a_opt.zero_grad(set_to_none=True)
        for p, g in zip(self.arch.parameters(), grads):
            p.grad = g
        self.a_opt.step()

    def _weight_step(self, x, y) -> tuple[float, int]:
        self.w_opt.zero_grad(set_to_none=True)
        loss, logits = self._loss(x, y, detach_arch=True)
        weights = list(self.supernet.parameters())
        for p, g in zip(weights, self.grads(loss, weights, unused_as_none=True)):
            p.grad = g  # None for a weight the forward did not use: the optimiser skips it
        nn.utils.clip_grad_norm_(self.supernet.parameters(), self.config.w_grad_clip)
        self.w_opt.step()
        return float(loss.detach()), int((logits.argmax(1) == y).sum())

    # ------------------------------------------------------------ epoch
    def before_epoch(self, epoch: int) -> dict[str, float]:
        """Hook for schedules (temperature, stages); returns extra metrics."""
        return {}

    def updates_arch(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (0-based) updates alpha (after the warm-up)."""
        return epoch >= self.config.warmup_epochs

    def train_epoch(self, epoch: int, data: SearchData) -> dict[str, float]:
        extra = self.before_epoch(epoch)
        self.supernet.train()
        update_arch = self.updates_arch(epoch)
        arch_batches = forever(data.train_a)
        total = correct = seen = 0
        start, steps = time.perf_counter(), 0
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        lr = self.w_opt.param_groups[0]["lr"]
        for step, (x, y) in enumerate(data.train_w):
            x, y = x.to(self.device), y.to(self.device)
            if update_arch:
                xa, ya = (t.to(self.device) for t in next(arch_batches))
                self._arch_step(x, y, xa, ya)
            loss, hits = self._weight_step(x, y)
            check_finite(loss, epoch, step + 1)
            total, correct, seen, steps = total + loss * len(y), correct + hits, seen + len(y), steps + 1
        self.sched.step()
        metrics = {"loss": total / max(seen, 1), "acc": correct / max(seen, 1), "w_lr": lr,
                   "step_time_s": (time.perf_counter() - start) / max(steps, 1), **memory_metrics(self.device)}
        if data.val is not None:
            metrics.update(self.evaluate(data.val))
        genotype = self.genotype()
        metrics.update(skip_normal=float(genotype.count(SKIP, "normal")),
                       skip_reduce=float(genotype.count(SKIP, "reduce")), **extra)
        return metrics

    @torch.no_grad()
    def evaluate(self, loader: DataLoader) -> dict[str, float]:
        self.supernet.eval()
        total = correct = seen = 0
        mixes = [self.eval_mix(kind) for kind in KINDS]
        for x, y in loader:
            x, y = x.to(self.device), y.to(self.device)
            logits = self.supernet(x, *mixes)
            total += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        self.supernet.train()
        return {"val_loss": total / max(seen, 1), "val_acc": correct / max(seen, 1)}

    def progress_postfix(self, metrics: dict[str, float]) -> dict[str, str]:
        return {"loss": f"{metrics['loss']:.3f}", "skip_normal": f"{int(metrics['skip_normal'])}"}

    # ------------------------------------------------------------ result
    def probabilities(self) -> dict[str, np.ndarray]:
        """softmax(alpha) per cell kind, (14, n_ops) over ``self.op_names``."""
        with torch.no_grad():
            return {kind: F.softmax(self.arch.alpha(kind), dim=-1).cpu().double().numpy() for kind in KINDS}

    def edge_weights(self) -> dict[str, np.ndarray]:
        """PC-DARTS's softmax(beta) per cell kind (14,); ones without it."""
        with torch.no_grad():
            out = {}
            for kind in KINDS:
                w = self.arch.edge_weights(kind)
                out[kind] = np.ones(NUM_EDGES) if w is None else w.cpu().double().numpy()
            return out

    def tables(self) -> dict[str, np.ndarray]:
        """``normal`` / ``reduce``: op probabilities (14, n_ops) over the
        space's op set; ``edges_normal`` / ``edges_reduce``: edge weights."""
        probs, edges = self.probabilities(), self.edge_weights()
        return {**probs, **{f"edges_{kind}": edges[kind] for kind in KINDS}}

    def strengths(self) -> dict[str, np.ndarray]:
        """Derivation weights: op probability x edge weight (PC-DARTS)."""
        probs, edges = self.probabilities(), self.edge_weights()
        return {kind: probs[kind] * edges[kind][:, None] for kind in KINDS}

    def genotype(self) -> CellGenotype:
        s = self.strengths()
        return derive_genotype(s["normal"], s["reduce"], self.op_names)

    def derive(self) -> SearchResult:
        return SearchResult(genotype=self.genotype(), tables=self.tables(), history=list(self.history))

    # ------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        state = {"supernet": self.supernet.state_dict(), "arch": self.arch.state_dict(),
                 "w_opt": self.w_opt.state_dict(), "a_opt": self.a_opt.state_dict(),
                 "sched": self.sched.state_dict(), "epoch": self.epoch,
                 "history": [dict(h) for h in self.history], "rng": rng_state()}
        return copy.deepcopy(state)  # a snapshot: later steps must not change it

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.supernet.load_state_dict(state["supernet"])
        self.arch.load_state_dict(state["arch"])
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
        self.sched.load_state_dict(state["sched"])
        self.epoch, self.history = int(state["epoch"]), [dict(h) for h in state["history"]]
        set_rng_state(state["rng"])


def _zero_if_none(g: Optional[torch.Tensor], p: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(p) if g is None else g


# ---------------------------------------------------------------- torchrun

class DataParallelCell(ResumeFromRank0):
    """Mixed in before a cell strategy class (``data_parallel()``): every
    gradient of the search (weights, alpha, DARTS's unrolled terms) is
    averaged over the ranks (``grads``), so each rank takes the one-process
    step of the whole batch; DARTS's second-order gradient is built from
    several ``autograd.grad`` calls over unrolled weights that DDP's hooks
    do not see, hence no DDP wrapper. The networks of every stage start
    from rank 0's initialisation; evaluation uses rank 0's BatchNorm
    statistics; the training loss and accuracy are means over the ranks. A
    resumed run starts every rank from rank 0's checkpoint. Give it
    ``shard_search_data`` loaders."""

    supernet: nn.Module
    arch: nn.Module

    def _build(self, cells: int, schedule_epochs: int) -> None:
        super()._build(cells, schedule_epochs)  # type: ignore[misc]
        for tensor in [*self.supernet.parameters(), *self.supernet.buffers(), *self.arch.parameters()]:
            broadcast_(tensor.data)

    def grads(self, loss: torch.Tensor, params: list[torch.Tensor],
              unused_as_none: bool = False) -> list[Optional[torch.Tensor]]:
        return average_over_ranks(super().grads(loss, params, unused_as_none))  # type: ignore[misc]

    def evaluate(self, loader: Any) -> dict[str, float]:
        sync_buffers(self.supernet)
        return super().evaluate(loader)  # type: ignore[misc]

    def train_epoch(self, epoch: int, data: SearchData) -> dict[str, float]:
        metrics = super().train_epoch(epoch, data)  # type: ignore[misc]
        return {**metrics, **mean_over_ranks({"loss": metrics["loss"], "acc": metrics["acc"]})}


@functools.cache
def _cell_variant(strategy_cls: type) -> type:
    return type(f"DataParallel{strategy_cls.__name__}", (DataParallelCell, strategy_cls), {})
