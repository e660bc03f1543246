"""FBNet (Wu et al., CVPR 2019): differentiable, latency-aware search over
the layer-wise space by Gumbel-softmax relaxation (reference-notes.md).

Per epoch e (0-based), with W = ``warmup_epochs``:

* weights: one pass over ``train_w``, SGD (lr 0.1, momentum 0.9, weight
  decay 1e-4), cosine-annealed over all epochs (FBNet's schedule);
* e >= W: then one pass over ``train_a`` updating θ by Adam (lr 0.01,
  weight decay 5e-4); e < W trains the weights only, θ stays 0 (uniform);
* temperature τ_e = τ_0 · decay^max(0, e − W): 5.0 × 0.956 per epoch,
  counted from the first epoch that trains θ;
* loss (FBNet Eq. 2) L = CE · α · (log LAT)^β, α = 0.2, β = 0.6, with
  LAT = Σ_l Σ_i m_{l,i} · LAT_{l,i}, m the Gumbel-softmax mask of the same
  forward and LAT_{l,i} the measured table (``space.latency``; measured on
  the strategy's device in :meth:`FBNetStrategy.setup` when the space has
  none). The same loss drives both updates (for the weights the latency
  factor only rescales the step).

Defaults are the paper's ImageNet search: 90 epochs, the first 10 weights
only. Choices where the paper is vague or does not fit small CPU models:

* batch 64 for both steps (``arch_batch_size`` None: ``batch_size``);
* the two phases run one after the other inside an epoch (a full pass on
  ``train_w``, then a full pass on ``train_a``), not interleaved per step;
* LAT enters the loss in ``latency_unit`` (default microseconds): the
  paper's phone latencies are tens of ms, while a small preset on a CPU or
  GPU takes well under 1 ms, where log LAT < 0 and (log LAT)^β is
  undefined; LAT is also clamped below at e, so log LAT >= 1;
* soft Gumbel-softmax (all candidates run, weighted), as the paper.

Resume: data order comes from the loaders' own generators
(``search_data``), reseeded with ``seed + epoch`` (``train_a``:
``+ 2**20``) at the start of each pass; Gumbel noise comes from torch's
global RNG, whose state (with Python's and NumPy's) is in
:meth:`FBNetStrategy.state_dict`. Restoring a state therefore gives a
bit-identical continuation on the CPU.

Under torchrun :class:`DistributedFBNet` runs the same loss through
DistributedDataParallel.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from nas_core.sections import CrossFieldError
from nas_core.spaces.layerwise import LayerwiseGenotype, LayerwiseSpace, measure_latency_table, theta_heatmap
from nas_core.strategies.base import STRATEGIES, OneShotConfig, OneShotStrategy, SearchData, SearchResult, SpacesOf
from nas_core.strategies.data_parallel import ResumeFromRank0
from nas_core.supernet.layerwise import LayerwiseSupernet
from nas_core.train.checkpoint import rng_state, set_rng_state
from nas_core.train.distributed import (
    LossModule,
    broadcast_,
    broadcast_object,
    is_distributed,
    is_main,
    quiet_progress,
    wrap_ddp,
)
from nas_core.train.loop import default_progress, evaluate, reseed, train_one_epoch

ARCH_SEED_OFFSET = 2**20
_UNIT_SCALE = {"ms": 1.0, "us": 1000.0}


class FBNetConfig(OneShotConfig):
    """``strategies.fbnet`` (defaults: FBNet's published search settings;
    departures in the module docstring)."""

    epochs: int = Field(90, ge=1)
    weight_fraction: float = Field(0.8, gt=0.0, lt=1.0, description="FBNet: 80% of D~ for w, 20% for θ")
    warmup_epochs: int = Field(10, ge=0, description="epochs that train the weights only (θ stays uniform)")
    w_lr: float = Field(0.1, gt=0)
    w_momentum: float = Field(0.9, ge=0, lt=1)
    w_weight_decay: float = Field(1e-4, ge=0)
    theta_lr: float = Field(0.01, gt=0)
    theta_weight_decay: float = Field(5e-4, ge=0)
    temperature: float = Field(5.0, gt=0)
    temperature_decay: float = Field(0.956, gt=0, le=1)
    alpha: float = Field(0.2, gt=0)
    beta: float = Field(0.6, ge=0)
    latency_unit: Literal["ms", "us"] = "us"

    @model_validator(mode="after")
    def _warmup_before_the_end(self) -> "FBNetConfig":
        if self.warmup_epochs >= self.epochs:
            raise CrossFieldError("strategies.fbnet.warmup_epochs", self.warmup_epochs,
                                  f"must be less than strategies.fbnet.epochs = {self.epochs}, "
                                  "or θ is never trained")
        return self


def fbnet_loss(ce: torch.Tensor, latency: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """CE · α · (log LAT)^β with LAT clamped below at e (log LAT >= 1)."""
    return ce * alpha * torch.log(latency.clamp_min(math.e)) ** beta


def theta_entropy(probabilities: torch.Tensor) -> float:
    """Mean over layers of −Σ_i p log p (nats); log(n_ops) when uniform."""
    p = probabilities.detach()
    return float(-(p * torch.log(p.clamp_min(1e-12))).sum(1).mean())


def argmax_genotype(space: LayerwiseSpace, theta: torch.Tensor | np.ndarray) -> LayerwiseGenotype:
    """FBNet's final architecture: the op of largest θ in every layer."""
    return space.decode(np.asarray(torch.as_tensor(theta).argmax(1)))


@STRATEGIES.register("fbnet")
class FBNetStrategy(OneShotStrategy):
    """FBNet over a :class:`LayerwiseSpace` (see the module docstring);
    ``self.supernet`` is its :class:`LayerwiseSupernet` (θ included)."""

    name = "fbnet"
    spaces = SpacesOf("layerwise")
    Config = FBNetConfig

    def __init__(self, space: LayerwiseSpace, config: FBNetConfig, device: torch.device, seed: int = 0) -> None:
        super().__init__(space, config, device, seed)
        self.latency = space.latency
        self.progress: Callable[..., Any] | None = default_progress
        self.theta_history: list[torch.Tensor] = []

    @classmethod
    def data_parallel(cls) -> type["FBNetStrategy"]:
        return DistributedFBNet

    def num_epochs(self) -> int:
        return self.config.epochs

    def temperature(self, epoch: int) -> float:
        c = self.config
        return c.temperature * c.temperature_decay ** max(0, epoch - c.warmup_epochs)

    def setup(self, data: SearchData | None) -> None:
        c = self.config
        self.supernet = LayerwiseSupernet(self.space).to(self.device)
        if self.latency is None:
            self.latency = measure_latency_table(self.space, self.device, self.space.latency_repeats)
        self.latency.check(self.space)
        self.lat_table = self.latency.tensor(self.device) * _UNIT_SCALE[c.latency_unit]
        self.w_optimizer = torch.optim.SGD(self.supernet.weight_parameters(), lr=c.w_lr,
                                           momentum=c.w_momentum, weight_decay=c.w_weight_decay)
        self.theta_optimizer = torch.optim.Adam([self.supernet.theta], lr=c.theta_lr,
                                                weight_decay=c.theta_weight_decay)
        self.w_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_optimizer, T_max=c.epochs)

    def loss_fn(self, temperature: float) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
        """FBNet's loss for one batch at ``temperature``: (loss, logits)."""
        alpha, beta, table = self.config.alpha, self.config.beta, self.lat_table

        def loss(model: LayerwiseSupernet, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            mask = model.sample_mask(temperature)
            logits = model.forward_weighted(x, mask)
            return fbnet_loss(F.cross_entropy(logits, y), (mask * table).sum(), alpha, beta), logits

        return loss

    def train_epoch(self, epoch: int, data: SearchData) -> dict[str, float]:
        tau = self.temperature(epoch)
        loss = self.loss_fn(tau)
        reseed(data.train_w, self.seed + epoch)
        w = train_one_epoch(self.supernet, data.train_w, self.w_optimizer, self.device, epoch,
                            scheduler=self.w_scheduler, loss=loss, progress=self.progress,
                            desc=f"epoch {epoch + 1} weights")
        metrics = {"loss": w["loss"], "acc": w["acc"], "temperature": tau,
                   "lr": self.w_optimizer.param_groups[0]["lr"]}
        if epoch >= self.config.warmup_epochs:
            reseed(data.train_a, self.seed + epoch + ARCH_SEED_OFFSET)
            a = train_one_epoch(self.supernet, data.train_a, self.theta_optimizer, self.device, epoch,
                                loss=loss, progress=self.progress, desc=f"epoch {epoch + 1} theta")
            metrics.update(theta_loss=a["loss"], theta_acc=a["acc"])
        if data.val is not None:
            v = evaluate(self.supernet, data.val, self.device,
                         forward=lambda m, x: m.forward_weighted(x, m.probabilities()))
            metrics.update(val_loss=v["loss"], val_acc=v["acc"])
        probs = self.supernet.probabilities()
        metrics.update(theta_entropy=theta_entropy(probs), expected_latency_ms=self.latency.expected_ms(probs))
        self.theta_history.append(self.supernet.theta.detach().cpu().clone())
        return metrics

    def tables(self) -> dict[str, np.ndarray]:
        """``layers``: softmax θ per layer (L, n_ops), float64."""
        return {"layers": self.supernet.probabilities().detach().cpu().numpy().astype(np.float64)}

    def derive(self) -> SearchResult:
        theta = self.supernet.theta.detach().cpu()
        genotype = argmax_genotype(self.space, theta)
        tables = self.tables()
        return SearchResult(genotype=genotype, tables=tables, history=list(self.history),
                            extras={"theta": theta.numpy(), "latency_ms": self.latency.genotype_ms(genotype),
                                    "expected_latency_ms": self.latency.expected_ms(tables["layers"])})

    def theta_history_array(self) -> np.ndarray:
        """θ after every finished epoch: (epochs, L, n_ops)."""
        if not self.theta_history:
            return np.zeros((0, self.space.num_layers, self.space.num_ops), dtype=np.float32)
        return torch.stack(self.theta_history).numpy()

    def arrays(self) -> dict[str, np.ndarray]:
        return {"theta_history": self.theta_history_array()}

    def figures(self, result: SearchResult) -> dict[str, Any]:
        """The space's probability heatmap and θ over the epochs."""
        figures = super().figures(result)
        figures["theta_heatmap.png"] = theta_heatmap(self.theta_history_array(), self.space.op_names,
                                                     str(result.genotype))
        return figures

    def progress_postfix(self, metrics: dict[str, float]) -> dict[str, str]:
        return {**super().progress_postfix(metrics), "tau": f"{metrics['temperature']:.2f}"}

    def state_dict(self) -> dict[str, Any]:
        return {"supernet": self.supernet.state_dict(), "epoch": self.epoch,
                "w_optimizer": self.w_optimizer.state_dict(),
                "theta_optimizer": self.theta_optimizer.state_dict(),
                "w_scheduler": self.w_scheduler.state_dict(),
                "rng": rng_state(), "temperature": self.temperature(self.epoch),
                "history": [dict(h) for h in self.history],
                "theta_history": torch.from_numpy(self.theta_history_array()),
                "space": {"name": self.space.name, "preset": self.space.preset},
                "op_names": list(self.space.op_names)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.supernet.load_state_dict(state["supernet"])
        self.w_optimizer.load_state_dict(state["w_optimizer"])
        self.theta_optimizer.load_state_dict(state["theta_optimizer"])
        self.w_scheduler.load_state_dict(state["w_scheduler"])
        set_rng_state(state["rng"])
        self.epoch = int(state["epoch"])
        self.history = [dict(h) for h in state["history"]]
        self.theta_history = list(state["theta_history"].unbind(0))


class DistributedFBNet(ResumeFromRank0, FBNetStrategy):
    """:class:`FBNetStrategy` with its loss run through DDP. Hooks used:
    ``setup`` (builds ``self.supernet``, the optimisers and
    ``self.lat_table``) and ``loss_fn`` (the loss ``train_epoch`` trains
    with); the lifecycle, state_dict and resume are FBNet's own. Give it
    ``shard_search_data`` loaders. Every rank uses rank 0's latency table;
    a resumed run starts every rank from rank 0's checkpoint. With one
    process it behaves exactly as FBNetStrategy."""

    def setup(self, data: SearchData | None) -> None:
        super().setup(data)
        if not is_distributed():
            return
        self.latency = broadcast_object(self.latency)
        self.lat_table = broadcast_(self.lat_table.contiguous())
        self.ddp = wrap_ddp(LossModule(self.supernet), self.device)
        if not is_main():
            self.progress = quiet_progress

    def loss_fn(self, temperature: float) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
        inner = super().loss_fn(temperature)
        if not is_distributed():
            return inner
        self.ddp.module.loss = inner

        def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.ddp(x, y)

        return loss
