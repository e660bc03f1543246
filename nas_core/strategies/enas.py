"""ENAS (Pham et al., ICML 2018): the NASNet controller of rl.py over the
cell space's weight-sharing supernet (nas_core.supernet.cell).

Every child is one path of the supernet: the two inputs and two ops of each
node of the normal and the reduction cell (the controller's tokens are the
32 entries of ``space.encode``, masked to valid rows; rl.py). An epoch is

(a) one pass over ``train_w`` of shared-weight training: each mini-batch
    trains the single path of a child freshly drawn from the controller
    (ENAS's M = 1), SGD with Nesterov momentum, weight decay, gradient-norm
    clip and a cosine learning rate; weights off the path get no gradient;
(b) ``controller_steps`` controller updates: each draws ``controller_batch``
    children, rewards each with its accuracy under the shared weights on one
    mini-batch of ``train_a`` (ENAS's validation split; the step's children
    share the batch) and takes one REINFORCE step with Adam against the
    exponential moving-average baseline, with the entropy bonus (rl.py's
    ``reinforce_step``; the baseline takes each reward in draw order).

The rewards use BatchNorm with the reward batch's statistics (ENAS's
reward graph runs the child in training mode; early in the search the
running statistics, kept per op by the sampled paths, are far off) and
restore the running statistics after, so the supernet is unchanged.

Derivation (ENAS: sample several models, score each on a single
validation mini-batch, keep the best). ``derive`` has no data, so the
selection runs at the end of the last epoch: ``derive_samples`` children
are drawn, each distinct one is scored on one ``train_a`` mini-batch, the
first best is kept (``best_row``, checkpointed) and is the genotype. Before
the last epoch, the genotype is the controller's most likely child
(greedy, token by token).

Tables for DC-NAS (``tables``): the controller's marginals estimated from
``table_samples`` children drawn with a numpy generator seeded with
``seed`` (the same draws every call, the global RNG untouched): per cell
kind, ``edges_<kind>`` (14,) = the share of children whose node keeps that
edge as an input; ``<kind>`` (14, n_ops) = the op distribution on the edge
given it is kept (uniform over the non-zero ops on an edge never kept,
whose weight is then 0). The space's sampler draws a node's inputs
proportional to the first and ops from the second; Eq. 9's edge weight x
p(op) is the joint marginal of (edge, op).

Settings and departures:

* Defaults are ENAS's CIFAR-10 micro search: controller LSTM 100 units,
  initialised U(-0.1, 0.1), Adam 3.5e-4, logits / temperature 5.0 then
  2.5 * tanh, entropy weight 1e-4, baseline decay 0.99; shared weights
  SGD with Nesterov momentum 0.9, lr 0.05 cosine to 0.001, weight decay
  1e-4, gradient clip 5; 8 cells (6 normal + 2 reduction) of 20 channels,
  batch 160, 150 epochs, 30 controller steps of 10 children (its released
  search script: the paper gives no step count).
* The cosine schedule runs once over the epochs (ENAS restarts it,
  T0 = 10, Tmul = 2).
* ENAS adds the entropy to the reward; here it is a bonus term of the
  loss (rl.py), and the baseline starts at the first step's mean reward
  (rl.py) instead of 0.
* The cell space has no combiner choice (add), and the controller draws
  the inputs as the space encodes them (input_a < input_b).
* The supernet is the cell space's DARTS-style search network
  (nas_core.supernet.cell: model_search.py layout, ops without affine
  BatchNorm) over the space's op set (DARTS's 8 by default; ENAS had 5),
  not ENAS's micro child network.
* One process only (no torchrun variant); the cell space only (the global
  cell space would need its own supernet paths and tables).

Draws of children during the search use the global torch RNG, which
``setup`` seeds with ``seed`` and ``state_dict`` saves with the loaders'
shuffling, so a resumed run repeats the same children and batches.

History per epoch: ``loss`` / ``acc`` (shared-weight training, each batch
on its own child), ``reward`` (mean over the epoch's controller children),
``baseline`` (after the epoch), ``entropy`` (the controller's mean summed
entropy), ``w_lr``, timing and memory; with ``val`` the greedy child's
``val_loss`` / ``val_acc``; the last epoch adds ``derive_reward`` and
``derive_distinct``.
"""
from __future__ import annotations

import copy
import time
from typing import Any, Iterator, Optional

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from nas_core.sections import CrossFieldError
from nas_core.spaces.cell import EDGES, KINDS, NUM_INPUTS, NUM_NODES, ZERO, CellGenotype
from nas_core.spaces.cell.genotype import node_edges
from nas_core.spaces.cell.sampling import HALF_WIDTH, PICKS
from nas_core.strategies.base import STRATEGIES, OneShotConfig, SearchData, SearchResult, SpacesOf, StrategyError
from nas_core.strategies.darts import DartsStrategy
from nas_core.strategies.rl import Controller, inverse_cdf, one_thread, reinforce_step
from nas_core.supernet.cell import MixWeights, SearchNetwork, full_edge_ops
from nas_core.train.checkpoint import rng_state, set_rng_state
from nas_core.train.loop import check_finite, forever, memory_metrics


class EnasConfig(OneShotConfig):
    """``strategies.enas`` (defaults: ENAS's CIFAR-10 micro search; module
    docstring). Shared weights: ``cells``, ``init_channels``, ``w_*``;
    controller: ``hidden``, ``lr``, ``temperature`` / ``tanh_constant``
    (None: off), ``entropy_weight``, ``baseline_decay``,
    ``controller_steps`` x ``controller_batch`` children per epoch;
    ``derive_samples`` children drawn to pick the result and
    ``table_samples`` for the DC-NAS tables."""

    epochs: int = Field(150, ge=1)
    batch_size: int = Field(160, ge=1)
    cells: int = Field(8, ge=1)
    init_channels: int = Field(20, ge=2)
    w_lr: float = Field(0.05, gt=0)
    w_lr_min: float = Field(0.001, ge=0)
    w_momentum: float = Field(0.9, ge=0, lt=1)
    w_nesterov: bool = True
    w_weight_decay: float = Field(1e-4, ge=0)
    w_grad_clip: float = Field(5.0, gt=0)
    hidden: int = Field(100, ge=1)
    lr: float = Field(3.5e-4, gt=0)
    temperature: Optional[float] = Field(5.0, gt=0)
    tanh_constant: Optional[float] = Field(2.5, gt=0)
    entropy_weight: float = Field(1e-4, ge=0)
    baseline_decay: float = Field(0.99, ge=0, lt=1)
    controller_steps: int = Field(30, ge=1)
    controller_batch: int = Field(10, ge=1)
    derive_samples: int = Field(1000, ge=1)
    table_samples: int = Field(1000, ge=1)

    @model_validator(mode="after")
    def _schedule_fits(self) -> "EnasConfig":
        if self.w_lr_min > self.w_lr:
            raise CrossFieldError("strategies.enas.w_lr_min", self.w_lr_min,
                                  f"must be <= strategies.enas.w_lr ({self.w_lr})")
        if self.w_nesterov and self.w_momentum == 0:
            raise CrossFieldError("strategies.enas.w_nesterov", True,
                                  "Nesterov momentum needs strategies.enas.w_momentum > 0")
        return self


@STRATEGIES.register("enas")
class EnasStrategy(DartsStrategy):
    """ENAS over a :class:`CellSpace` (module docstring). Reuses the DARTS
    base's network building, loaders, weight step and evaluation; ENAS has
    no alpha: the op weights of a forward are the one-path
    :class:`MixWeights` of the current child ``self.child``."""

    name = "enas"
    spaces = SpacesOf("cell")
    Config = EnasConfig

    @classmethod
    def data_parallel(cls) -> type["EnasStrategy"]:
        raise StrategyError("strategy 'enas' has no data-parallel variant (torchrun): run it in one process")

    # ------------------------------------------------------------ building
    def _build(self, cells: int, schedule_epochs: int) -> None:
        cfg = self.config
        self.supernet = SearchNetwork(self.op_names, self.space.input_channels, self.space.num_classes,
                                      cfg.init_channels, cells, full_edge_ops(self.op_names)).to(self.device)
        self.w_opt = torch.optim.SGD(self.supernet.parameters(), lr=cfg.w_lr, momentum=cfg.w_momentum,
                                     nesterov=cfg.w_nesterov, weight_decay=cfg.w_weight_decay)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_opt, T_max=schedule_epochs,
                                                                eta_min=cfg.w_lr_min)
        self.controller = Controller(self.space.encoding_bounds(), cfg.hidden, cfg.temperature, cfg.tanh_constant)
        for p in self.controller.parameters():
            nn.init.uniform_(p, -0.1, 0.1)
        self.controller.to(self.device)
        self.c_opt = torch.optim.Adam(self.controller.parameters(), lr=cfg.lr)
        self.mask = self.space.allowed_tokens
        self.baseline: Optional[float] = None
        self.best_row: Optional[np.ndarray] = None
        self.child = self.greedy_row()

    # ------------------------------------------------------------ children
    def sample_rows(self, n: int) -> np.ndarray:
        """``n`` children (n, 32) drawn from the controller with the global torch RNG."""
        with torch.no_grad(), one_thread():
            return self.controller.run(self.mask, n, draw=_torch_draw)[0]

    def greedy_row(self) -> np.ndarray:
        """The controller's most likely token at every position in turn."""
        with torch.no_grad(), one_thread():
            return self.controller.run(self.mask, 1, draw=lambda probs: probs.argmax(axis=1))[0][0]

    def mix(self, kind: str) -> MixWeights:
        return self.supernet.path_mix(self.child, kind, self.device)

    def eval_mix(self, kind: str) -> MixWeights:
        return self.mix(kind)

    @torch.no_grad()
    def rewards(self, rows: np.ndarray, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
        """Accuracy of each child ``rows[i]`` on (x, y) under the shared
        weights, BatchNorm on the batch's statistics (ENAS's reward graph);
        the running statistics are restored after, so the supernet is unchanged."""
        self.supernet.train()
        saved = [b.clone() for b in self.supernet.buffers()]
        out = np.empty(len(rows))
        try:
            for i, row in enumerate(rows):
                mixes = [self.supernet.path_mix(row, kind, self.device) for kind in KINDS]
                out[i] = float((self.supernet(x, *mixes).argmax(1) == y).float().mean())
        finally:
            for buffer, value in zip(self.supernet.buffers(), saved):
                buffer.copy_(value)
        return out

    # ------------------------------------------------------------ epoch
    def train_epoch(self, epoch: int, data: SearchData) -> dict[str, float]:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        lr = self.w_opt.param_groups[0]["lr"]
        start = time.perf_counter()
        loss, acc, steps = self._train_shared(epoch, data)
        metrics = {"loss": loss, "acc": acc, "w_lr": lr,
                   "step_time_s": (time.perf_counter() - start) / max(steps, 1)}
        metrics.update(self._train_controller(forever(data.train_a)))
        self.sched.step()
        metrics.update(memory_metrics(self.device))
        if data.val is not None:
            self.child = self.greedy_row()
            metrics.update(self.evaluate(data.val))
        if epoch + 1 == self.num_epochs():
            metrics.update(self._select(next(forever(data.train_a))))
        return metrics

    def _train_shared(self, epoch: int, data: SearchData) -> tuple[float, float, int]:
        """(a): one pass over ``train_w``, one fresh child per mini-batch."""
        self.supernet.train()
        total = correct = seen = steps = 0
        for step, (x, y) in enumerate(data.train_w):
            x, y = x.to(self.device), y.to(self.device)
            self.child = self.sample_rows(1)[0]
            loss, hits = self._weight_step(x, y)
            check_finite(loss, epoch, step + 1)
            total, correct, seen, steps = total + loss * len(y), correct + hits, seen + len(y), steps + 1
        return total / max(seen, 1), correct / max(seen, 1), steps

    def _train_controller(self, batches: Iterator) -> dict[str, float]:
        """(b): ``controller_steps`` REINFORCE steps; the learning signal."""
        cfg, rewards, entropies = self.config, [], []
        for _ in range(cfg.controller_steps):
            x, y = (t.to(self.device) for t in next(batches))
            rows = self.sample_rows(cfg.controller_batch)
            reward = np.asarray(self.rewards(rows, x, y), dtype=np.float64)
            if self.baseline is None:
                self.baseline = float(reward.mean())
            with one_thread():
                entropies.append(reinforce_step(self.controller, self.c_opt, self.mask, rows, reward,
                                                self.baseline, cfg.entropy_weight))
            for r in reward:
                self.baseline = cfg.baseline_decay * self.baseline + (1 - cfg.baseline_decay) * float(r)
            rewards.append(reward)
        return {"reward": float(np.concatenate(rewards).mean()), "baseline": float(self.baseline),
                "entropy": float(np.mean(entropies))}

    def _select(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        """ENAS's derivation: the best of ``derive_samples`` children on one batch."""
        x, y = (t.to(self.device) for t in batch)
        rows = self.sample_rows(self.config.derive_samples)
        _, first = np.unique(rows, axis=0, return_index=True)
        distinct = rows[np.sort(first)]  # in draw order: ties go to the first drawn
        scores = self.rewards(distinct, x, y)
        best = int(np.argmax(scores))
        self.best_row = distinct[best].copy()
        return {"derive_reward": float(scores[best]), "derive_distinct": float(len(distinct))}

    def progress_postfix(self, metrics: dict[str, float]) -> dict[str, str]:
        return {k: f"{metrics[k]:.3f}" for k in ("loss", "reward", "entropy")}

    # ------------------------------------------------------------ result
    def tables(self) -> dict[str, np.ndarray]:
        """The controller's marginals over ``table_samples`` seeded draws
        (module docstring)."""
        rng = np.random.default_rng(self.seed)
        with torch.no_grad(), one_thread():
            rows = self.controller.run(self.mask, self.config.table_samples,
                                       draw=lambda probs: inverse_cdf(probs, rng.random(len(probs))))[0]
        return marginal_tables(rows, self.op_names)

    def probabilities(self) -> dict[str, np.ndarray]:
        tables = self.tables()
        return {kind: tables[kind] for kind in KINDS}

    def edge_weights(self) -> dict[str, np.ndarray]:
        tables = self.tables()
        return {kind: tables[f"edges_{kind}"] for kind in KINDS}

    def genotype(self) -> CellGenotype:
        """The derived child after the last epoch, else the greedy one."""
        return self.space.decode(self.greedy_row() if self.best_row is None else self.best_row)

    def derive(self) -> SearchResult:
        return SearchResult(genotype=self.genotype(), tables=self.tables(), history=list(self.history),
                            extras={"derived": self.best_row is not None})

    # ------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        state = {"supernet": self.supernet.state_dict(), "controller": self.controller.state_dict(),
                 "w_opt": self.w_opt.state_dict(), "c_opt": self.c_opt.state_dict(),
                 "sched": self.sched.state_dict(), "baseline": self.baseline,
                 "best_row": None if self.best_row is None else torch.as_tensor(self.best_row),
                 "epoch": self.epoch, "history": [dict(h) for h in self.history], "rng": rng_state()}
        return copy.deepcopy(state)  # a snapshot: later steps must not change it

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.supernet.load_state_dict(state["supernet"])
        self.controller.load_state_dict(state["controller"])
        self.w_opt.load_state_dict(state["w_opt"])
        self.c_opt.load_state_dict(state["c_opt"])
        self.sched.load_state_dict(state["sched"])
        self.baseline = None if state["baseline"] is None else float(state["baseline"])
        self.best_row = None if state["best_row"] is None else state["best_row"].cpu().numpy().astype(np.int64)
        self.epoch, self.history = int(state["epoch"]), [dict(h) for h in state["history"]]
        self.child = self.greedy_row()
        set_rng_state(state["rng"])


def _torch_draw(probs: np.ndarray) -> np.ndarray:
    return inverse_cdf(probs, torch.rand(len(probs), dtype=torch.float64).numpy())


def marginal_tables(rows: np.ndarray, op_names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Cell tables from encoded children (n, 32): per kind the share of
    children keeping each edge and the op frequencies on it (module
    docstring)."""
    choice = np.array([name != ZERO for name in op_names], dtype=np.float64)
    out = {}
    for part, kind in enumerate(KINDS):
        half = np.asarray(rows, dtype=np.int64)[:, part * HALF_WIDTH:(part + 1) * HALF_WIDTH]
        counts = np.zeros((len(EDGES), len(op_names)))
        for k in range(NUM_NODES):
            for pick in range(PICKS):
                edges = node_edges(NUM_INPUTS + k).start + half[:, 4 * k + 2 * pick]
                np.add.at(counts, (edges, half[:, 4 * k + 2 * pick + 1]), 1.0)
        kept = counts.sum(axis=1)
        out[kind] = np.where(kept[:, None] > 0, counts / np.maximum(kept, 1.0)[:, None], choice / choice.sum())
        out[f"edges_{kind}"] = kept / max(len(rows), 1)
    return out
