"""StacNAS (Li et al., "Hierarchical neural architecture search via operator
clustering"): a two-stage DARTS over groups of correlated operators, with
one-level optimisation (stacnas.md §3.4, appendices A, C, E).

The whole search runs as this strategy's epochs in the pretrain stage, in
three phases of ``epochs`` epochs each (the paper trains each for 80),
every phase with its own supernet, alpha, optimisers and cosine schedule
(``supernet_key`` is the phase, so DC-NAS compares stage 2's supernets):

0. ``cluster``: DARTS (first order, two-level, the full op set) on a proxy
   of ``cluster_cells`` cells (appendix A: 14). At the start of phase 1 the
   correlation of the candidate ops is measured on ``cluster_images``
   training images and the ops are clustered
   (nas_core/strategies/stacnas_clustering.py); each group's key operator
   is chosen. ``clustering: published`` skips this phase and uses
   appendix A's groups of the op set.
1. ``stage1``: every edge mixes ``none`` and the key operators, a proxy of
   ``stage1_cells`` cells (paper: 14); at the end each edge activates the
   group of its largest non-zero alpha (Algorithm 1, lines 1-7).
2. ``stage2``: every edge mixes ``none`` and the members of its activated
   group, a deeper proxy of ``stage2_cells`` cells (paper: 20); the
   genotype is DARTS's rule on its alpha (lines 8-16).

``none`` stays in both stages' mixtures (the paper: Zero scales each edge
so edges can be ranked; its released code does the same). Edges of
stage 2 hold groups of different sizes: every edge's op list is padded with
``none`` to the largest group and the padded entries are masked out of the
softmax (weight exactly 0), so the supernet keeps one (14, n) alpha per
cell kind. The architecture tables are over the full op set with 0 for the
ops absent from an edge (as P-DARTS's).

Optimisation of stages 1 and 2 (``optimisation``): ``one_level`` (§3.4.3,
the paper's choice): one loss on one batch, w and alpha each take a step
along their gradient of it; an epoch is a pass over ``train_w`` then
``train_a`` (one-level needs no held-out half, so it trains on all of D~).
``two_level`` is DARTS's first-order alternation as phase 0. Weights: SGD
as DARTS; alpha: Adam as DARTS (the paper keeps DARTS's settings).

Gradient confusion (appendix C) of the phase's supernet (its weights, alpha
fixed, batch statistics of ``train_w`` mini-batches, running statistics
left untouched) is the metric ``zeta`` of the last epoch of stages 1 and 2:
the mean over ``zeta_iterations`` draws of ``zeta_batches`` mini-batches,
divided by the number of weights. The paper measures it after 100 epochs
of training; ours is measured after the phase's own training.

Complexity match (§3.4.2, Table 6; ``depth_match``, off by default): at
the start of stage 1 the depth among ``depth_candidates`` whose stage-1
supernet has the zeta closest to the final network's becomes stage 1's
depth (metrics ``zeta_final_init``, ``zeta_depth_<d>``, ``matched_cells``).
The final network is the space's (``final_cells`` x ``final_channels``)
of phase 0's DARTS genotype (``clustering: published``: a random genotype,
seeded). Departure: both are measured at initialisation; the paper trains
each network for 100 epochs first, which would cost more than the search.

Metrics per epoch, besides DARTS's: ``phase``, ``cells``, ``ops_per_edge``
(the largest edge), ``alpha_max_<kind>`` / ``alpha_entropy_<kind>`` (mean
over edges of the largest op weight / of the entropy of the op weights),
``groups`` (after clustering) and ``zeta``.
"""
from __future__ import annotations

import math
from itertools import chain
from typing import Annotated, Any, ClassVar, Hashable, Iterator, Literal, Mapping, Optional

import numpy as np
import torch
from pydantic import Field
from torch.nn import functional as F

from nas_core.spaces.cell import KINDS, NUM_EDGES, ZERO, CellGenotype, derive_genotype
from nas_core.strategies.base import STRATEGIES, SearchData, SearchResult, StrategyError
from nas_core.strategies.darts import DartsFamilyConfig, DartsStrategy
from nas_core.strategies.stacnas_clustering import (
    OpGroup,
    candidate_ops,
    cluster_ops,
    group_labels,
    operator_correlation,
    plot_correlation,
    published_groups,
)
from nas_core.supernet.cell import MixWeights, SearchNetwork, full_edge_ops
from nas_core.train.confusion import confusion_draws, network_confusion

PHASES = ("cluster", "stage1", "stage2")


class StacNasConfig(DartsFamilyConfig):
    """``strategies.stacnas`` (defaults: the paper's CIFAR-10 search; the
    rest DARTS's). ``epochs`` and ``warmup_epochs`` are per phase."""

    section: ClassVar[str] = "stacnas"
    epochs: int = Field(80, ge=1, description="epochs of each phase")
    cluster_cells: int = Field(14, ge=1)
    stage1_cells: int = Field(14, ge=1)
    stage2_cells: int = Field(20, ge=1)
    clustering: Literal["correlation", "published"] = "correlation"
    cluster_threshold: float = Field(0.25, gt=-1.0, lt=1.0, description="merge groups while mean rho >= this")
    cluster_images: int = Field(10000, ge=2, description="training images whose op outputs are correlated")
    optimisation: Literal["one_level", "two_level"] = "one_level"
    zeta_iterations: int = Field(10, ge=1)
    zeta_batches: int = Field(4, ge=2, description="m mini-batches per gradient-confusion draw")
    depth_match: bool = Field(False, description="stage 1 depth matched to the final network by zeta")
    depth_candidates: list[Annotated[int, Field(ge=1)]] = Field([5, 11, 14, 17, 20], min_length=1)


@STRATEGIES.register("stacnas")
class StacNasStrategy(DartsStrategy):
    """StacNAS over a cell space (module docstring)."""

    name = "stacnas"
    Config = StacNasConfig

    def __init__(self, space, config, device, seed: int = 0) -> None:
        super().__init__(space, config, device, seed)
        if config.clustering == "published":
            try:
                published_groups(space.op_set, self.op_names)
            except ValueError as exc:
                raise StrategyError(f"strategies.stacnas.clustering = 'published': {exc}; use 'correlation'") from None
        if not candidate_ops(self.op_names):
            raise StrategyError(f"spaces.cell.op_set = {space.op_set!r}: StacNAS needs at least one op besides "
                                f"none and skip_connect to group")
        self.one_level_now = False

    @classmethod
    def data_parallel(cls) -> type["StacNasStrategy"]:
        raise StrategyError("strategy 'stacnas' has no data-parallel variant (torchrun): the clustering, the "
                            "group activation and the depth match would each run on one rank's shard")

    # ------------------------------------------------------------ phases
    def first_phase(self) -> int:
        return 0 if self.config.clustering == "correlation" else 1

    def num_epochs(self) -> int:
        return self.config.epochs * (len(PHASES) - self.first_phase())

    def phase_of(self, epoch: int) -> int:
        return self.first_phase() + epoch // self.config.epochs

    def in_phase(self, epoch: int) -> int:
        return epoch % self.config.epochs

    def updates_arch(self, epoch: int) -> bool:
        """Two-level alpha steps (phase 0, or ``two_level``) after the warm-up."""
        return self.in_phase(epoch) >= self.config.warmup_epochs and not self.one_level_now

    def second_order(self) -> bool:
        return False

    def phase_cells(self, phase: int) -> int:
        c = self.config
        return (c.cluster_cells, self.stage1_cells, c.stage2_cells)[phase]

    def setup(self, data: Optional[SearchData]) -> None:
        torch.manual_seed(self.seed)
        self.correlation: Optional[np.ndarray] = None  # (n_edges, n, n) per-edge correlation
        self.groups: tuple[OpGroup, ...] = ()
        self.activated: dict[str, list[int]] = {}
        self.stage1_cells, self.depth_matched = self.config.stage1_cells, False
        self.reference = self.space.random(np.random.default_rng(self.seed))  # replaced by phase 0's genotype
        if self.first_phase() == 1:
            self.groups = published_groups(self.space.op_set, self.op_names)
        self._enter(self.first_phase(), self._phase_ops(self.first_phase()))

    def _phase_ops(self, phase: int) -> dict[str, list[tuple[str, ...]]]:
        """The real (unpadded) op names of every edge in ``phase``."""
        if phase == 0:
            return full_edge_ops(self.op_names)
        if phase == 1:
            keys = self._with_zero({g.key for g in self.groups})
            return {kind: [keys] * NUM_EDGES for kind in KINDS}
        return {kind: [self._with_zero(set(self.groups[g].members)) for g in self.activated[kind]]
                for kind in KINDS}

    def _with_zero(self, names: set[str]) -> tuple[str, ...]:
        names = names | ({ZERO} if ZERO in self.op_names else set())
        return tuple(n for n in self.op_names if n in names)

    def _enter(self, phase: int, real_ops: Mapping[str, list[tuple[str, ...]]]) -> None:
        """Build ``phase``'s supernet over ``real_ops`` (padded with masked
        ``none``), alpha and optimisers."""
        self.phase = phase
        self.real_ops = {kind: [tuple(ops) for ops in real_ops[kind]] for kind in KINDS}
        width = max(len(ops) for kind in KINDS for ops in self.real_ops[kind])
        self.edge_ops = {kind: [ops + (ZERO,) * (width - len(ops)) for ops in self.real_ops[kind]] for kind in KINDS}
        self.masks = {kind: torch.tensor([[0.0 if j < len(ops) else -math.inf for j in range(width)]
                                          for ops in self.real_ops[kind]], device=self.device) for kind in KINDS}
        self._build(self.phase_cells(phase), self.config.epochs)

    def _advance(self, phase: int, data: SearchData) -> dict[str, float]:
        """End of phase ``phase - 1``: cluster (after phase 0) or activate a
        group per edge (after phase 1), then build ``phase``."""
        if phase == 1:
            self.reference = self.genotype()  # phase 0's DARTS genotype: the depth match's final network
            names = candidate_ops(self.op_names)
            images = _images(chain(data.train_w, data.train_a), self.config.cluster_images, self.device)
            mixes = [self.eval_mix(kind) for kind in KINDS]
            self.correlation = operator_correlation(self.supernet, lambda x: self.supernet(x, *mixes), images,
                                                    self.op_names)
            self.groups = cluster_ops(self.correlation.mean(0), self.op_names, self.config.cluster_threshold)
            extra = {"groups": float(len(self.groups)), "cluster_candidates": float(len(names))}
        else:
            self.activated = self._activate()
            extra = {}
        self._enter(phase, self._phase_ops(phase))
        return extra

    def _activate(self) -> dict[str, list[int]]:
        """Per cell kind and edge, the group of the key operator with the
        largest stage-1 weight (none excluded; ties: the first group)."""
        probs = self._phase_probabilities()
        out = {}
        for kind in KINDS:
            out[kind] = []
            for e, ops in enumerate(self.real_ops[kind]):
                keys = [(p, -j, name) for j, (name, p) in enumerate(zip(ops, probs[kind][e])) if name != ZERO]
                best = max(keys)[2]
                out[kind].append(next(g for g, group in enumerate(self.groups) if group.key == best))
        return out

    # ------------------------------------------------------------ op weights
    def mix(self, kind: str) -> MixWeights:
        return MixWeights(F.softmax(self.arch.alpha(kind) + self.masks[kind], dim=-1), None)

    def eval_mix(self, kind: str) -> MixWeights:
        return self.mix(kind)

    # ------------------------------------------------------------ training
    def train_epoch(self, epoch: int, data: SearchData) -> dict[str, float]:
        phase = self.phase_of(epoch)
        extra = self._advance(phase, data) if phase != self.phase else {}
        if phase == 1 and self.config.depth_match and not self.depth_matched:
            extra.update(self._match_depth(data))
            self._enter(1, self.real_ops)
        self.one_level_now = (phase > 0 and self.config.optimisation == "one_level"
                              and self.in_phase(epoch) >= self.config.warmup_epochs)
        steps = data
        if phase > 0 and self.config.optimisation == "one_level":
            steps = SearchData(_Chained(data.train_w, data.train_a), data.train_a, data.val)
        metrics = super().train_epoch(epoch, steps)
        metrics.update(phase=float(phase), cells=float(len(self.supernet.cells)),
                       ops_per_edge=float(len(self.edge_ops["normal"][0])), **extra, **self._alpha_stats())
        if phase > 0 and self.in_phase(epoch) == self.config.epochs - 1:
            metrics["zeta"] = self.confusion(data.train_w)
        return metrics

    def _weight_step(self, x, y) -> tuple[float, int]:
        """One-level: w and alpha step along their gradients of one loss on
        the same batch (§3.4.3); otherwise DARTS's weight step."""
        if not self.one_level_now:
            return super()._weight_step(x, y)
        loss, logits = self._loss(x, y)
        weights, arch = list(self.supernet.parameters()), list(self.arch.parameters())
        grads = self.grads(loss, arch + weights, unused_as_none=True)
        self.w_opt.zero_grad(set_to_none=True)
        self.a_opt.zero_grad(set_to_none=True)
        for p, g in zip(arch + weights, grads):
            p.grad = g
        torch.nn.utils.clip_grad_norm_(weights, self.config.w_grad_clip)
        self.w_opt.step()
        self.a_opt.step()
        return float(loss.detach()), int((logits.argmax(1) == y).sum())

    @staticmethod
    def _with_mixes(net: torch.nn.Module, mixes: list[MixWeights]) -> Any:
        """``net``'s forward with the stage's op mixes."""
        return lambda x: net(x, *mixes)

    def _draws(self, loader) -> list[list[Any]]:
        return confusion_draws(loader, self.config.zeta_iterations, self.config.zeta_batches)

    def confusion(self, loader) -> float:
        """Appendix C's normalised gradient confusion of the current
        supernet's weights (module docstring)."""
        mixes = [MixWeights(self.mix(kind).ops.detach()) for kind in KINDS]
        return network_confusion(self.supernet, lambda x: self.supernet(x, *mixes), self._draws(loader), self.device)

    def _match_depth(self, data: SearchData) -> dict[str, float]:
        """Complexity match (§3.4.2, Table 6): the stage-1 depth among
        ``depth_candidates`` whose supernet's zeta is closest to the final
        network's (ties: the shallower). Both are measured at
        initialisation (uniform op weights; the final network of the
        reference genotype, ``final_cells`` x ``final_channels``, without
        auxiliary head) on the same draws of ``train_w`` mini-batches, on a
        forked RNG so the search itself is unaffected."""
        c = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + 1)
            draws = self._draws(data.train_w)
            final = self.space.build_network(self.reference, auxiliary=False).to(self.device)
            out = {"zeta_final_init": network_confusion(final, final, draws, self.device)}
            mixes = [MixWeights(F.softmax(self.masks[kind], dim=-1)) for kind in KINDS]
            for depth in c.depth_candidates:
                net = SearchNetwork(self.op_names, self.space.input_channels, self.space.num_classes,
                                    c.init_channels, depth, self.edge_ops).to(self.device)
                out[f"zeta_depth_{depth}"] = network_confusion(net, self._with_mixes(net, mixes), draws, self.device)
        target = out["zeta_final_init"]
        self.stage1_cells = min(c.depth_candidates, key=lambda d: (abs(out[f"zeta_depth_{d}"] - target), d))
        self.depth_matched = True
        return {**out, "matched_cells": float(self.stage1_cells)}

    def _alpha_stats(self) -> dict[str, float]:
        out = {}
        for kind, table in self._phase_probabilities().items():
            p = np.clip(table, 1e-12, 1.0)
            out[f"alpha_max_{kind}"] = float(table.max(1).mean())
            out[f"alpha_entropy_{kind}"] = float(-(table * np.log(p)).sum(1).mean())
        return out

    def progress_postfix(self, metrics: dict[str, float]) -> dict[str, str]:
        return {**super().progress_postfix(metrics), "phase": PHASES[int(metrics["phase"])]}

    # ------------------------------------------------------------ result
    def _phase_probabilities(self) -> dict[str, np.ndarray]:
        with torch.no_grad():
            return {kind: self.mix(kind).ops.cpu().double().numpy() for kind in KINDS}

    def probabilities(self) -> dict[str, np.ndarray]:
        """Scattered onto the full op set (ops absent from an edge: 0)."""
        out = {}
        for kind, table in self._phase_probabilities().items():
            full = np.zeros((NUM_EDGES, len(self.op_names)))
            for e, ops in enumerate(self.real_ops[kind]):
                full[e, [self.op_names.index(o) for o in ops]] = table[e, :len(ops)]
            out[kind] = full
        return out

    def genotype(self) -> CellGenotype:
        """DARTS's rule on the current phase's weights (stage 1: over the key
        operators; stage 2: the final genotype)."""
        s = self._phase_probabilities()
        return derive_genotype(s["normal"], s["reduce"], self.edge_ops["normal"],
                               reduce_op_names=self.edge_ops["reduce"])

    def derive(self) -> SearchResult:
        result = super().derive()
        result.extras.update(groups=[{"key": g.key, "members": list(g.members)} for g in self.groups],
                             activated={k: [self.groups[g].key for g in v] for k, v in self.activated.items()})
        return result

    def arrays(self) -> dict[str, np.ndarray]:
        """The groups (group index per op of the op set, -1: none), the
        mean and per-edge correlation, the activated group per edge."""
        out: dict[str, np.ndarray] = {}
        if self.groups:
            out["stacnas_groups"] = group_labels(self.groups, self.op_names)
            out["stacnas_key_ops"] = np.array([any(g.key == n for g in self.groups) for n in self.op_names],
                                              dtype=np.int64)
        if self.correlation is not None:
            out["stacnas_correlation"] = self.correlation.mean(0)
            out["stacnas_edge_correlation"] = self.correlation
        for kind, groups in self.activated.items():
            out[f"stacnas_activated_{kind}"] = np.asarray(groups, dtype=np.int64)
        return out

    def figures(self, result: SearchResult) -> dict[str, Any]:
        figures = super().figures(result)
        if self.correlation is not None:
            figures["stacnas_correlation.png"] = plot_correlation(
                self.correlation.mean(0), self.op_names, self.groups,
                f"StacNAS operator correlation, op set {self.space.op_set} (* key operator)")
        return figures

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        extra = {"phase": self.phase, "real_ops": _plain(self.real_ops), "stage1_cells": self.stage1_cells,
                 "depth_matched": self.depth_matched,
                 "groups": [[g.key, *g.members] for g in self.groups],
                 "activated": {k: list(v) for k, v in self.activated.items()},
                 "correlation": None if self.correlation is None else torch.from_numpy(self.correlation.copy())}
        return {**super().state_dict(), **extra}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._restore_phase(state)
        super().load_state_dict(state)

    def _restore_phase(self, state: Mapping[str, Any]) -> None:
        self.groups = tuple(OpGroup(g[0], tuple(g[1:])) for g in state["groups"])
        self.stage1_cells, self.depth_matched = int(state["stage1_cells"]), bool(state["depth_matched"])
        self.activated = {k: [int(g) for g in v] for k, v in state["activated"].items()}
        corr = state["correlation"]
        self.correlation = None if corr is None else corr.double().numpy()
        self._enter(int(state["phase"]), {k: [tuple(ops) for ops in v] for k, v in state["real_ops"].items()})

    def supernet_key(self, state: Mapping[str, Any]) -> Hashable:
        return int(state["phase"])

    def load_supernet(self, state: Mapping[str, Any]) -> torch.nn.Module:
        """The supernet of checkpoint ``state``'s phase with its weights (the
        phase's network and alpha are rebuilt when they differ; the global
        RNG is left as it was)."""
        if int(state["phase"]) != self.phase or _plain(self.real_ops) != _plain(state["real_ops"]):
            with torch.random.fork_rng(devices=[]):
                self._restore_phase(state)
            self.arch.load_state_dict(state["arch"])
        return super().load_supernet(state)


class _Chained:
    """Iterates several loaders one after the other (a one-level epoch)."""

    def __init__(self, *loaders) -> None:
        self.loaders = loaders

    def __iter__(self) -> Iterator:
        return chain.from_iterable(self.loaders)


def _images(batches, count: int, device: torch.device) -> list[torch.Tensor]:
    """The first ``count`` images of ``batches`` (batch by batch)."""
    out, seen = [], 0
    for x, _ in batches:
        out.append(x[:count - seen].to(device))
        seen += len(out[-1])
        if seen >= count:
            break
    return out


def _plain(edge_ops: Mapping[str, Any]) -> dict[str, list[list[str]]]:
    return {k: [list(ops) for ops in v] for k, v in edge_ops.items()}
