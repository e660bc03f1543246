"""FBNet (Wu et al., CVPR 2019): differentiable, latency-aware search over
the layer-wise space by Gumbel-softmax relaxation (reference-notes.md).

Per epoch e (0-based), with W = ``warmup_epochs``:

* weights: one pass over ``train_w``, SGD (lr, momentum, weight decay from
  params), cosine-annealed over all epochs (FBNet's schedule);
* e >= W: then one pass over ``train_a`` updating θ by Adam (lr 0.01,
  weight decay 5e-4); e < W trains the weights only, θ stays 0 (uniform);
* temperature τ_e = τ_0 · decay^max(0, e − W): 5.0 × 0.956 per epoch,
  counted from the first epoch that trains θ;
* loss (FBNet Eq. 2) L = CE · α · (log LAT)^β with
  LAT = Σ_l Σ_i m_{l,i} · LAT_{l,i}, m the Gumbel-softmax mask of the same
  forward and LAT_{l,i} the measured table. The same loss drives both
  updates (for the weights the latency factor only rescales the step).

Choices where the paper is vague or does not fit small CPU models:

* the two phases run one after the other inside an epoch (a full pass on
  ``train_w``, then a full pass on ``train_a``), not interleaved per step;
* LAT enters the loss in ``latency_unit`` (default microseconds): the
  paper's phone latencies are tens of ms, while a small preset on a CPU or
  GPU takes well under 1 ms, where log LAT < 0 and (log LAT)^β is
  undefined; LAT is also clamped below at e, so log LAT >= 1;
* soft Gumbel-softmax (all candidates run, weighted), as the paper.

Resume: data order comes from the loaders' own generators, reseeded with
``seed + epoch`` (``train_a``: ``+ 2**20``) at the start of each pass;
Gumbel noise comes from torch's global RNG, whose state (with Python's
and NumPy's) is in :meth:`state_dict`. Restoring a state therefore gives a
bit-identical continuation on the CPU.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from nas_core.cost.latency import LatencyTable, measure_latency_table
from nas_core.spaces.genotype import Genotype
from nas_core.spaces.layerwise import LayerwiseSpace
from nas_core.strategies.base import STRATEGIES, SearchData, SearchResult, SearchStrategy
from nas_core.supernet.layerwise import LayerwiseSupernet
from nas_core.train.checkpoint import rng_state, set_rng_state
from nas_core.train.loop import default_progress, evaluate, reseed, train_one_epoch

ARCH_SEED_OFFSET = 2**20
_UNIT_SCALE = {"ms": 1.0, "us": 1000.0}


def fbnet_loss(ce: torch.Tensor, latency: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """CE · α · (log LAT)^β with LAT clamped below at e (log LAT >= 1)."""
    return ce * alpha * torch.log(latency.clamp_min(math.e)) ** beta


def theta_entropy(probabilities: torch.Tensor) -> float:
    """Mean over layers of −Σ_i p log p (nats); log(n_ops) when uniform."""
    p = probabilities.detach()
    return float(-(p * torch.log(p.clamp_min(1e-12))).sum(1).mean())


def argmax_genotype(space: LayerwiseSpace, theta: torch.Tensor | np.ndarray) -> Genotype:
    """FBNet's final architecture: the op of largest θ in every layer."""
    idx = np.asarray(torch.as_tensor(theta).argmax(1))
    return Genotype(space.name, space.preset, tuple(space.op_names[i] for i in idx))


@STRATEGIES.register("fbnet")
class FBNetStrategy(SearchStrategy):
    """``config``: a PretrainConfig (epochs, warmup_epochs, w_* and theta_*
    optimiser settings, temperature, temperature_decay, alpha, beta,
    latency_unit). ``latency``: the table to use; measured on ``device``
    in :meth:`setup` when None."""

    name = "fbnet"

    def __init__(self, space: LayerwiseSpace, config: Any, device: torch.device, seed: int = 0,
                 latency: Optional[LatencyTable] = None) -> None:
        super().__init__(space, config, device, seed)
        self.latency = latency
        self.progress: Callable[..., Any] = default_progress
        self.theta_history: list[torch.Tensor] = []

    def num_epochs(self) -> int:
        return self.config.epochs

    def temperature(self, epoch: int) -> float:
        c = self.config
        return c.temperature * c.temperature_decay ** max(0, epoch - c.warmup_epochs)

    def setup(self, data: SearchData) -> None:
        c = self.config
        self.net = LayerwiseSupernet(self.space).to(self.device)
        if self.latency is None:
            self.latency = measure_latency_table(self.space, self.device, c.latency_repeats)
        self.latency.check(self.space)
        self.lat_table = self.latency.tensor(self.device) * _UNIT_SCALE[c.latency_unit]
        self.w_optimizer = torch.optim.SGD(self.net.weight_parameters(), lr=c.w_lr,
                                           momentum=c.w_momentum, weight_decay=c.w_weight_decay)
        self.theta_optimizer = torch.optim.Adam([self.net.theta], lr=c.theta_lr,
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
        w = train_one_epoch(self.net, data.train_w, self.w_optimizer, self.device, epoch,
                            scheduler=self.w_scheduler, loss=loss, progress=self.progress,
                            desc=f"epoch {epoch + 1} weights")
        metrics = {"loss": w["loss"], "acc": w["acc"], "temperature": tau,
                   "lr": self.w_optimizer.param_groups[0]["lr"]}
        if epoch >= self.config.warmup_epochs:
            reseed(data.train_a, self.seed + epoch + ARCH_SEED_OFFSET)
            a = train_one_epoch(self.net, data.train_a, self.theta_optimizer, self.device, epoch,
                                loss=loss, progress=self.progress, desc=f"epoch {epoch + 1} theta")
            metrics.update(theta_loss=a["loss"], theta_acc=a["acc"])
        if data.val is not None:
            v = evaluate(self.net, data.val, self.device,
                         forward=lambda m, x: m.forward_weighted(x, m.probabilities()))
            metrics.update(val_loss=v["loss"], val_acc=v["acc"])
        probs = self.net.probabilities()
        metrics.update(theta_entropy=theta_entropy(probs), expected_latency_ms=self.latency.expected_ms(probs))
        self.theta_history.append(self.net.theta.detach().cpu().clone())
        return metrics

    def derive(self) -> SearchResult:
        theta = self.net.theta.detach().cpu()
        genotype = argmax_genotype(self.space, theta)
        return SearchResult(genotype=genotype,
                            probabilities={"layers": F.softmax(theta, 1).numpy()},
                            op_names=list(self.space.op_names), history=list(self.history),
                            extras={"theta": theta.numpy(), "theta_history": self.theta_history_array(),
                                    "latency_ms": self.latency.genotype_ms(genotype)})

    def theta_history_array(self) -> np.ndarray:
        """θ after every finished epoch: (epochs, L, n_ops)."""
        if not self.theta_history:
            return np.zeros((0, self.space.num_layers, self.space.num_ops), dtype=np.float32)
        return torch.stack(self.theta_history).numpy()

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.net.state_dict(), "epoch": self.epoch,
                "w_optimizer": self.w_optimizer.state_dict(),
                "theta_optimizer": self.theta_optimizer.state_dict(),
                "w_scheduler": self.w_scheduler.state_dict(),
                "rng": rng_state(), "temperature": self.temperature(self.epoch),
                "history": [dict(h) for h in self.history],
                "theta_history": torch.from_numpy(self.theta_history_array()),
                "space": {"name": self.space.name, "preset": self.space.preset},
                "op_names": list(self.space.op_names)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["model"])
        self.w_optimizer.load_state_dict(state["w_optimizer"])
        self.theta_optimizer.load_state_dict(state["theta_optimizer"])
        self.w_scheduler.load_state_dict(state["w_scheduler"])
        set_rng_state(state["rng"])
        self.epoch = int(state["epoch"])
        self.history = [dict(h) for h in state["history"]]
        self.theta_history = list(state["theta_history"].unbind(0))
