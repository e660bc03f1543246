"""Training one child network from scratch: the early-stopping evaluation
T̃(N, D̃) of Eq. 8 (a few epochs on the reduced set) and the full training
T(N, D) of Eq. 10 (cosine schedule, standard augmentation).

Choices:
- SGD with momentum and weight decay, learning rate annealed by a cosine
  schedule to 0 over ``epochs`` (stepped once per epoch).
- Augmentation (torchvision.transforms.v2 on the normalised tensors, per
  image): ``cifar10``/``cifar100``: random crop with 4-pixel zero padding +
  horizontal flip; ``mnist``/``digits``: random crop with side/8 padding,
  no flip (digits are not mirror-symmetric); ``imagefolder``: random resized
  crop (scale 0.35-1) + flip; other sources: none. Zero padding of a
  normalised image is the dataset mean, not black.
- Determinism under a thread pool: torch's global RNG is shared by threads,
  so model initialisation (:func:`seeded`) and each image's augmentation
  draw from a private seed (seed, epoch, index) under a lock; loaders
  shuffle with their own generator (loop.make_loader). A fit therefore gives
  the same numbers in a thread, in another process or alone (same thread
  count).
- The reported validation accuracy is that of the last epoch; the best one
  is kept in the history.
- A space may bring its final network's training recipe (SearchSpace.
  training_recipe, e.g. DARTS's evaluation recipe on the cell space):
  ``drop_path`` — the network's ``set_drop_path`` gets
  ``drop_path * epoch / epochs`` at the start of each epoch (DARTS's linear
  ramp from 0); ``aux_weight`` — a network that returns ``(logits,
  auxiliary logits)`` in training mode is trained on CE(logits) +
  ``aux_weight`` · CE(auxiliary); ``cutout`` — after the standard
  augmentation, a ``cutout`` × ``cutout`` square with a uniformly drawn
  centre (clipped at the border) is set to 0, the dataset mean of the
  normalised images (DeVries & Taylor; DARTS's Cutout); ``grad_clip`` — the
  gradient norm is clipped before each step.
- Under torchrun (nas_core.train.distributed) the network trains with
  DistributedDataParallel: rank r takes 1/N of every batch (the batch size
  must be divisible by N), gradients are averaged, the reported training
  loss and accuracy are means over the ranks, and validation and test
  accuracy are over the whole set. Every rank ends with the same weights.
"""
from __future__ import annotations

import contextlib
import copy
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from torchvision.transforms import v2

from nas_core.train.distributed import (
    is_distributed,
    is_main,
    mean_over_ranks,
    quiet_progress,
    rank_share,
    shard_loader,
    sum_over_ranks,
    sync_buffers,
    wrap_ddp,
)
from nas_core.train.loop import Progress, evaluate, make_loader, train_one_epoch

_RNG_LOCK = threading.RLock()


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's CPU RNG seeded by ``seed`` and restore it
    afterwards, holding a lock so concurrent threads do not interleave."""
    with _RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@dataclass(frozen=True)
class FitSettings:
    epochs: int
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 4e-5
    augment: bool = False
    seed: int = 0
    num_workers: int = 0
    drop_path: float = 0.0
    aux_weight: float = 0.0
    cutout: int = 0
    grad_clip: Optional[float] = None


@dataclass
class FitResult:
    history: list[dict[str, float]]
    val_acc: float
    best_val_acc: float
    test_acc: Optional[float]
    seconds: float
    state_dict: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)


def augmentation(dataset: str, input_shape: tuple[int, int, int]) -> Optional[Callable]:
    """The standard per-image augmentation of a dataset source (module
    docstring), or None."""
    _, h, w = input_shape
    if dataset in ("cifar10", "cifar100"):
        return v2.Compose([v2.RandomCrop((h, w), padding=4), v2.RandomHorizontalFlip()])
    if dataset in ("mnist", "digits"):
        return v2.RandomCrop((h, w), padding=max(1, h // 8))
    if dataset == "imagefolder":
        return v2.Compose([v2.RandomResizedCrop((h, w), scale=(0.35, 1.0), antialias=True),
                           v2.RandomHorizontalFlip()])
    return None


class Cutout:
    """Zero a ``length`` x ``length`` square of a (C, H, W) image whose
    centre is drawn uniformly over the image (the square is clipped at the
    border), with torch's RNG (seeded per image by :class:`Augmented`)."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
        half = self.length // 2
        out = x.clone()
        out[..., max(0, cy - half):cy + half + self.length % 2, max(0, cx - half):cx + half + self.length % 2] = 0
        return out


def recipe_loss(aux_weight: float) -> Callable[[nn.Module, torch.Tensor, torch.Tensor],
                                                tuple[torch.Tensor, torch.Tensor]]:
    """CE of the logits, plus ``aux_weight`` x CE of the auxiliary logits
    when the network returns ``(logits, auxiliary)`` (training mode)."""
    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = model(x)
        if isinstance(out, tuple):
            logits, auxiliary = out
            return F.cross_entropy(logits, y) + aux_weight * F.cross_entropy(auxiliary, y), logits
        return F.cross_entropy(out, y), out

    return loss


class Augmented(Dataset):
    """``dataset`` with ``transform`` applied to each image; image i of epoch
    e is augmented with the private seed (seed, e, i)."""

    def __init__(self, dataset: Dataset, transform: Callable, seed: int) -> None:
        self.dataset, self.transform, self.seed, self.epoch = dataset, transform, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        x, y = self.dataset[index]
        with seeded(((self.seed * 1_000_003 + self.epoch) * 1_000_003 + index) % 2**62):
            return self.transform(x), y


def fit(model: nn.Module, train_set: Dataset, val_set: Dataset, settings: FitSettings, device: torch.device,
        test_set: Optional[Dataset] = None, dataset: str = "", progress: Optional[Progress] = None,
        on_epoch: Optional[Callable[[int, dict[str, float]], None]] = None) -> FitResult:
    """Train ``model`` on ``train_set`` for ``settings.epochs`` epochs and
    report validation (and test) accuracy. ``on_epoch(epoch, metrics)`` is
    called after each epoch (1-based). Under torchrun every rank calls this
    with the same arguments: the model trains data-parallel (module
    docstring) and every rank returns the same numbers and weights."""
    start = time.perf_counter()
    if settings.drop_path and not hasattr(model, "set_drop_path"):
        raise ValueError(f"drop_path = {settings.drop_path}: {type(model).__name__} has no set_drop_path")
    model.to(device)
    train, loader = _train_loader(train_set, settings, dataset)
    trained = wrap_ddp(model, device) if is_distributed() else model
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                                weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.epochs)
    progress = progress if is_main() else quiet_progress
    history: list[dict[str, float]] = []
    for epoch in range(settings.epochs):
        if isinstance(train, Augmented):
            train.epoch = epoch
        if settings.drop_path:
            model.set_drop_path(settings.drop_path * epoch / settings.epochs)
        lr = optimizer.param_groups[0]["lr"]
        tr = mean_over_ranks(train_one_epoch(trained, loader, optimizer, device, epoch, scheduler=schedule,
                                             loss=recipe_loss(settings.aux_weight), progress=progress,
                                             desc=f"epoch {epoch + 1}/{settings.epochs}",
                                             grad_clip=settings.grad_clip))
        va = evaluate_all(model, val_set, settings.batch_size, device)
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": tr["loss"], "train_acc": tr["acc"],
               "val_loss": va["loss"], "val_acc": va["acc"]}
        history.append(row)
        if on_epoch is not None:
            on_epoch(epoch + 1, row)
    test_acc = None
    if test_set is not None:
        test_acc = evaluate_all(model, test_set, settings.batch_size, device)["acc"]
    state = {k: v.detach().cpu().clone() for k, v in copy.copy(model.state_dict()).items()}
    return FitResult(history=history, val_acc=history[-1]["val_acc"],
                     best_val_acc=max(r["val_acc"] for r in history), test_acc=test_acc,
                     seconds=time.perf_counter() - start, state_dict=state)


def _train_loader(train_set: Dataset, settings: FitSettings, dataset: str) -> tuple[Dataset, Any]:
    """The (augmented) training set and this rank's shuffled loader over it."""
    transform = augmentation(dataset, tuple(train_set[0][0].shape)) if settings.augment else None
    if settings.cutout:
        transform = Cutout(settings.cutout) if transform is None else v2.Compose([transform, Cutout(settings.cutout)])
    train = Augmented(train_set, transform, settings.seed) if transform is not None else train_set
    loader = make_loader(train, settings.batch_size, shuffle=True, seed=settings.seed,
                         num_workers=settings.num_workers)
    return train, shard_loader(loader)


def evaluate_all(model: nn.Module, dataset: Dataset, batch_size: int, device: torch.device) -> dict[str, float]:
    """Mean loss and accuracy of ``model`` over ``dataset``. Under torchrun
    each rank scores its share with rank 0's BatchNorm statistics and the
    sums are combined, so every rank gets the whole set's numbers."""
    if not is_distributed():
        return evaluate(model, make_loader(dataset, batch_size, shuffle=False), device)
    sync_buffers(model)
    share = rank_share(dataset)
    means = evaluate(model, make_loader(share, batch_size, shuffle=False), device)
    sums = sum_over_ranks({k: v * len(share) for k, v in means.items()})  # type: ignore[arg-type]
    return {k: v / len(dataset) for k, v in sums.items()}  # type: ignore[arg-type]
