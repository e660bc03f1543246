"""DARTS (Liu et al., ICLR 2019): differentiable search on the cell space,
and the base class of the other cell strategies (PC-DARTS, P-DARTS, GDAS,
SNAS), which change only how op weights are made from alpha, the network
they build, or the loss.

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

Choices: ``train_a`` is re-iterated when it is shorter than ``train_w``
(one epoch = one pass over ``train_w``); alpha updates start after
``warmup_epochs`` (PC-DARTS's warm-up; 0 in DARTS); the unrolled passes run
on copies of the BN running statistics so they do not disturb them. The
global torch RNG is seeded with ``seed`` in ``setup`` (weights and alpha
initialisation) and its state is part of ``state_dict`` (Gumbel noise and
DataLoader shuffling resume identically).
"""
from __future__ import annotations

import copy
import resource
import time
from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F
from torch.utils.data import DataLoader

from nas_core.spaces.cell import SKIP, CellGenotype, CellSpace, derive_genotype
from nas_core.strategies.base import STRATEGIES, SearchData, SearchResult, SearchStrategy, check_finite
from nas_core.supernet.cell import ArchParams, MixWeights, SearchNetwork

KINDS = ("normal", "reduce")


@STRATEGIES.register("darts")
class DartsStrategy(SearchStrategy):
    name = "darts"
    space_kind = "cell"
    supports_second_order = True

    def __init__(self, space: CellSpace, config: Any, device: torch.device, seed: int = 0) -> None:
        super().__init__(space, config, device, seed)
        if not isinstance(space, CellSpace):
            raise TypeError(f"strategy {self.name!r} searches the cell space: expected a CellSpace, "
                            f"got {type(space).__name__} (set search.strategy to a layer-wise strategy "
                            "for that space)")
        if config.order == 2 and not self.supports_second_order:
            raise ValueError(f"search.cell.order = 2: strategy {self.name!r} supports only order 1")
        self.op_names = tuple(space.op_names)

    # ------------------------------------------------------------ building
    def num_epochs(self) -> int:
        return self.config.epochs

    def setup(self, data: SearchData) -> None:
        torch.manual_seed(self.seed)
        full = [self.op_names] * 14
        self.edge_ops = {"normal": full, "reduce": full}
        self._build(self.config.cells, self.config.epochs)

    def partial_k(self) -> int:
        return 1

    def edge_norm(self) -> bool:
        return False

    def _build(self, cells: int, schedule_epochs: int) -> None:
        cfg = self.config
        self.net = SearchNetwork(self.space.input_channels, self.space.num_classes, cfg.init_channels, cells,
                                 self.edge_ops["normal"], self.edge_ops["reduce"], self.partial_k()).to(self.device)
        self.arch = ArchParams(len(self.edge_ops["normal"][0]), self.edge_norm()).to(self.device)
        self.w_opt = torch.optim.SGD(self.net.parameters(), lr=cfg.w_lr, momentum=cfg.w_momentum,
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
            logits = self.net(*args)
        else:
            buffers = {n: b.clone() for n, b in self.net.named_buffers()}
            logits = functional_call(self.net, {**params, **buffers}, args)
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
        if self.config.order == 1:
            loss, _ = self._loss(xa, ya)
            return self.grads(loss, arch)
        return self.unrolled_arch_grads(xw, yw, xa, ya, self._xi())

    def _xi(self) -> float:
        return self.config.unrolled_xi or self.w_opt.param_groups[0]["lr"]

    def unrolled_arch_grads(self, xw, yw, xa, ya, xi: float, r: float = 0.01) -> list[torch.Tensor]:
        arch = list(self.arch.parameters())
        w = dict(self.net.named_parameters())
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
        weights = list(self.net.parameters())
        for p, g in zip(weights, self.grads(loss, weights, unused_as_none=True)):
            p.grad = g  # None for a weight the forward did not use: the optimiser skips it
        nn.utils.clip_grad_norm_(self.net.parameters(), self.config.w_grad_clip)
        self.w_opt.step()
        return float(loss.detach()), int((logits.argmax(1) == y).sum())

    # ------------------------------------------------------------ epoch
    def before_epoch(self, epoch: int) -> dict[str, float]:
        """Hook for schedules (temperature, stages); returns extra metrics."""
        return {}

    def train_epoch(self, epoch: int, data: SearchData) -> dict[str, float]:
        extra = self.before_epoch(epoch)
        self.net.train()
        update_arch = epoch >= self.config.warmup_epochs
        arch_batches = _forever(data.train_a)
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
            check_finite(loss, epoch, step)
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
        self.net.eval()
        total = correct = seen = 0
        mixes = [self.eval_mix(kind) for kind in KINDS]
        for x, y in loader:
            x, y = x.to(self.device), y.to(self.device)
            logits = self.net(x, *mixes)
            total += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        self.net.train()
        return {"val_loss": total / max(seen, 1), "val_acc": correct / max(seen, 1)}

    # ------------------------------------------------------------ result
    def probabilities(self) -> dict[str, np.ndarray]:
        """softmax(alpha) per cell kind, (14, n_ops) over ``self.op_names``."""
        with torch.no_grad():
            return {kind: F.softmax(self.arch.alpha(kind), dim=-1).cpu().double().numpy() for kind in KINDS}

    def edge_weights(self) -> dict[str, np.ndarray]:
        with torch.no_grad():
            out = {}
            for kind in KINDS:
                w = self.arch.edge_weights(kind)
                out[kind] = np.ones(14) if w is None else w.cpu().double().numpy()
            return out

    def strengths(self) -> dict[str, np.ndarray]:
        """Derivation weights: op probability x edge weight (PC-DARTS)."""
        probs, edges = self.probabilities(), self.edge_weights()
        return {kind: probs[kind] * edges[kind][:, None] for kind in KINDS}

    def genotype(self) -> CellGenotype:
        s = self.strengths()
        return derive_genotype(s["normal"], s["reduce"], self.op_names)

    def derive(self) -> SearchResult:
        return SearchResult(genotype=self.genotype(), probabilities=self.probabilities(),
                            op_names=list(self.op_names), history=list(self.history),
                            extras={"edge_weights": self.edge_weights()})

    # ------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        state = {"net": self.net.state_dict(), "arch": self.arch.state_dict(), "w_opt": self.w_opt.state_dict(),
                 "a_opt": self.a_opt.state_dict(), "sched": self.sched.state_dict(), "epoch": self.epoch,
                 "history": [dict(h) for h in self.history], "torch_rng": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return copy.deepcopy(state)  # a snapshot: later steps must not change it

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.arch.load_state_dict(state["arch"])
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
        self.sched.load_state_dict(state["sched"])
        self.epoch, self.history = int(state["epoch"]), [dict(h) for h in state["history"]]
        torch.set_rng_state(state["torch_rng"].cpu())
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])


def _zero_if_none(g: Optional[torch.Tensor], p: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(p) if g is None else g


def _forever(loader: DataLoader) -> Iterator:
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the architecture loader (train_a) is empty")


def memory_metrics(device: torch.device) -> dict[str, float]:
    """Peak resident memory of the process (MB; Linux reports KiB) and, on
    CUDA, the peak allocated since the epoch started."""
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out
