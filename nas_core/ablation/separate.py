"""Separately trained architectures (dc-nas.md Algorithm 1, lines 2-12).

Every sampled channel-ratio network is trained on its own on D~ for η_max
epochs. After every epoch e it records

* the Eq. 7 features: o^{l,e} = output of layer l, global-average-pooled and
  averaged over the probe images, and F_{l,e} = cos(o^{l,1}, o^{l,e});
* the Eq. 6 features: F̂_{l,e} = cos(θ^{l,1}, θ^{l,e}) over the flattened
  conv weight of layer l;
* its validation accuracy, the early-stopping score of Eq. 8 at η = e.

Choices where the paper is vague: the probe outputs are taken in eval mode
(BatchNorm running statistics, so a feature does not depend on how the
probe is batched); the early-stopping run uses a constant learning rate, so
that stopping at any η ≤ η_max is the same truncated run (the full-training
schedule is cosine, stepped per epoch, see ``full.py``); the network is initialised and its
batches shuffled from a generator seeded by (runtime seed, architecture
index), so parallel runs are reproducible without the global RNG. Results
are bit-identical across sequential and thread-pool runs at the same torch
thread count; another intra-op thread count changes float reductions and
so the trained numbers (the cache key does not include it).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from nas_core.ablation.loop import Split, evaluate, train_one_epoch
from nas_core.ablation.store import job_key, save_record, tensor_fingerprint
from nas_core.dcnas.features import cosine_to_first
from nas_core.spaces.channel_ratio import ChannelRatioNet, ChannelRatioSpace

COST_KEYS = ("params", "flops")


@dataclass(frozen=True)
class TrainSpec:
    """SGD hyper-parameters of one training run."""

    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Literal["constant", "cosine"] = "constant"


@dataclass
class ArchData:
    """The splits every architecture of the ablation sees."""

    train: Split
    val: Split
    num_classes: int
    probe: Optional[torch.Tensor] = None
    test: Optional[Split] = None

    def fingerprint(self) -> str:
        parts = [self.train.x, self.train.y, self.val.x, self.val.y]
        parts += [t for t in (self.probe,) if t is not None]
        parts += [t for split in (self.test,) if split is not None for t in (split.x, split.y)]
        return tensor_fingerprint(*parts)


@dataclass
class ArchJob:
    """One fan-out item: train architecture ``index`` and store its record
    at ``path``. Plain data, so it pickles for process-based task runners."""

    index: int
    space: ChannelRatioSpace
    spec: TrainSpec
    data: ArchData
    device: str
    seed: int
    path: Path
    key: str
    replicate: int = 0


def arch_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def make_jobs(indices: Sequence[int], space: ChannelRatioSpace, spec: TrainSpec, data: ArchData,
              device: str | torch.device, seed: int, cache_dir: Path, kind: str,
              replicate: int = 0) -> list[ArchJob]:
    """Jobs for ``indices``; each record lives at ``cache_dir/<index>.json``
    and is valid only for the same genotype, space, spec, seed and data.
    The space must be built for the data's shape and classes."""
    check_space_fits(space, data)
    fingerprint = data.fingerprint()
    jobs = []
    for index in indices:
        genotype = space.genotype_at(int(index))
        key = job_key(kind, genotype.ratios, space.widths(genotype), space.strides, asdict(spec),
                      seed, fingerprint)
        jobs.append(ArchJob(int(index), space, spec, data, str(device), seed,
                            Path(cache_dir) / f"{int(index):05d}.json", key, replicate))
    return jobs


def check_space_fits(space: ChannelRatioSpace, data: ArchData) -> None:
    shape = tuple(data.train.x.shape[1:])
    if tuple(space.input_shape) != shape or space.num_classes != data.num_classes:
        raise ValueError(f"the channel_ratio space is built for inputs {tuple(space.input_shape)} and "
                         f"{space.num_classes} classes, the data has {shape} and {data.num_classes}")


def build_for(job: ArchJob) -> tuple[ChannelRatioNet, torch.Generator]:
    generator = torch.Generator().manual_seed(arch_seed(job.seed, job.index))
    genotype = job.space.genotype_at(job.index)
    model = job.space.build_network(genotype, generator)
    return model.to(job.device), generator


@dataclass
class RunState:
    """What one training run of a job needs: device, seeded model, shuffled
    loader of the training split, SGD and its (per-epoch) schedule."""

    device: torch.device
    model: ChannelRatioNet
    loader: DataLoader
    optimizer: torch.optim.Optimizer
    scheduler: Optional[torch.optim.lr_scheduler.LRScheduler]
    started: float

    def epoch(self, epoch: int) -> dict[str, float]:
        return train_one_epoch(self.model, self.loader, self.optimizer, self.device, epoch, self.scheduler)

    def evaluate(self, split: Split) -> dict[str, float]:
        return evaluate(self.model, split.loader(1024), self.device)


def start_run(job: ArchJob) -> RunState:
    started = time.perf_counter()
    device = torch.device(job.device)
    model, generator = build_for(job)
    spec = job.spec
    optimizer = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum,
                                weight_decay=spec.weight_decay)
    scheduler = None
    if spec.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=spec.epochs)
    return RunState(device, model, job.data.train.loader(spec.batch_size, generator), optimizer, scheduler,
                    started)


@torch.no_grad()
def probe_layer_means(model: ChannelRatioNet, probe: torch.Tensor, device: torch.device,
                      batch_size: int = 256) -> list[torch.Tensor]:
    """o^l for every layer: GAP of the layer output, averaged over the probe
    images (eval mode). Returns L vectors of shape (C_l,)."""
    model.eval()
    sums: list[torch.Tensor] | None = None
    for start in range(0, len(probe), batch_size):
        outputs, _ = model.forward_layers(probe[start:start + batch_size].to(device))
        pooled = [o.mean(dim=(2, 3)).sum(0).double().cpu() for o in outputs]
        sums = pooled if sums is None else [s + p for s, p in zip(sums, pooled)]
    return [s / len(probe) for s in sums]


def layer_features(per_epoch: list[list[torch.Tensor]]) -> np.ndarray:
    """(L, η) matrix F_{l,e} = cos(v^{l,1}, v^{l,e}) from per-epoch lists of
    per-layer vectors (probe means for Eq. 7, flattened weights for Eq. 6)."""
    layers = zip(*per_epoch)
    return np.stack([cosine_to_first(torch.stack([v.flatten().double() for v in vecs])).numpy()
                     for vecs in layers])


def train_separate(job: ArchJob, on_epoch: Callable[[int, dict], None] | None = None) -> dict[str, Any]:
    """Train one architecture on D~ for ``spec.epochs`` epochs; the record
    holds per-epoch validation accuracy and the Eq. 6 / Eq. 7 features."""
    if job.data.probe is None:
        raise ValueError("separate training needs probe images (ArchData.probe) for the Eq. 7 features")
    run = start_run(job)
    outputs, weights, curve = [], [], []
    for epoch in range(job.spec.epochs):
        fit = run.epoch(epoch)
        val = run.evaluate(job.data.val)
        outputs.append(probe_layer_means(run.model, job.data.probe, run.device))
        weights.append([w.detach().double().cpu().clone() for w in run.model.layer_weights()])
        curve.append({"train_loss": fit["loss"], "train_acc": fit["acc"], "val_acc": val["acc"]})
        if on_epoch is not None:
            on_epoch(epoch, curve[-1])
    genotype = job.space.genotype_at(job.index)
    cost = job.space.cost(genotype)
    return {
        "index": job.index,
        "ratios": list(genotype.ratios),
        **{key: cost[key] for key in COST_KEYS},
        "val_acc": [c["val_acc"] for c in curve],
        "train_acc": [c["train_acc"] for c in curve],
        "train_loss": [c["train_loss"] for c in curve],
        "feat_output": layer_features(outputs).tolist(),
        "feat_params": layer_features(weights).tolist(),
        "seconds": time.perf_counter() - run.started,
    }


def separate_job(job: ArchJob) -> dict[str, Any]:
    """Fan-out item: train, then store the record atomically."""
    return save_record(job.path, job.key, train_separate(job))


def spec_from_config(cfg, full: bool = False) -> TrainSpec:
    """The early-stopping run (η_max epochs on D~, constant lr) or the full
    run (``full_epochs`` on D, cosine) of an ``AblationConfig``."""
    return TrainSpec(epochs=cfg.full_epochs if full else cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                     momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                     schedule="cosine" if full else "constant")


def stack_records(records: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Arrays over the s architectures, in record order: ``feat_output`` and
    ``feat_params`` (s, L, η), ``es_acc`` (s, η), ``index``, ``params``,
    ``flops`` (s,), ``ratios`` (s, L)."""
    return {
        "feat_output": np.array([r["feat_output"] for r in records], dtype=np.float64),
        "feat_params": np.array([r["feat_params"] for r in records], dtype=np.float64),
        "es_acc": np.array([r["val_acc"] for r in records], dtype=np.float64),
        "index": np.array([r["index"] for r in records], dtype=np.int64),
        "params": np.array([r["params"] for r in records], dtype=np.int64),
        "flops": np.array([r["flops"] for r in records], dtype=np.int64),
        "ratios": np.array([r["ratios"] for r in records], dtype=np.float64),
    }
