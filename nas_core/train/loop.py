"""Plain train/evaluate loops (STYLE.md 3): functions of a model, a loader
and a device that return a dict of metrics; no logging framework inside.

``forward(model, x) -> logits`` replaces ``model(x)`` (e.g. a supernet
path); ``loss(model, x, y) -> (loss, logits)`` replaces forward + cross
entropy (e.g. FBNet's latency-aware loss). Steps are numbered from 1 in
error messages; ``check_finite`` stops at the first NaN/inf loss.
"""
from __future__ import annotations

import math
import resource
from typing import Any, Callable, Iterable, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

Forward = Callable[[nn.Module, torch.Tensor], torch.Tensor]
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
Progress = Callable[..., Iterable[Any]]


class NonFiniteLossError(RuntimeError):
    """Training produced NaN/inf; the message names the epoch and step."""

    def __init__(self, epoch: int, step: int, value: float) -> None:
        super().__init__(f"non-finite loss {value} at epoch {epoch + 1}, step {step}: "
                         "stopping; earlier checkpoints are kept")
        self.epoch, self.step, self.value = epoch, step, value


def check_finite(loss: torch.Tensor | float, epoch: int, step: int) -> None:
    value = float(loss)
    if not math.isfinite(value):
        raise NonFiniteLossError(epoch, step, value)


def default_progress(iterable: Iterable[Any], desc: str | None = None, total: int | None = None) -> Iterable[Any]:
    """A tqdm bar that disappears when done (and stays silent off a TTY)."""
    return tqdm(iterable, desc=desc, total=total, leave=False, disable=None)


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int = 0,
                num_workers: int = 0, drop_last: bool = False) -> DataLoader:
    """A loader whose shuffling draws from its own ``torch.Generator``
    (never the global RNG), so :func:`reseed` fixes an epoch's order."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      drop_last=drop_last, generator=torch.Generator().manual_seed(seed),
                      persistent_workers=False)


def forever(loader: DataLoader, name: str = "train_a") -> Iterator[Any]:
    """``loader``'s batches, epoch after epoch (a shuffling loader
    reshuffles); an empty ``loader`` is an error naming it (``name``)."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError(f"the {name} loader is empty: no batch to draw")


def memory_metrics(device: torch.device) -> dict[str, float]:
    """Peak resident memory of the process (MB; Linux reports KiB) and, on
    CUDA, the peak allocated since the epoch started."""
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def reseed(loader: DataLoader, seed: int) -> None:
    """Seed ``loader``'s generator: the next pass has the order of ``seed``."""
    if loader.generator is None:
        raise ValueError("reseed needs a DataLoader built with generator= (use make_loader)")
    loader.generator.manual_seed(seed)


def _cross_entropy(forward: Optional[Forward]) -> LossFn:
    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = forward(model, x) if forward else model(x)
        return F.cross_entropy(logits, y), logits

    return loss


def _batches(loader: DataLoader, progress: Optional[Progress], desc: str | None) -> Iterable[Any]:
    return progress(loader, desc=desc, total=len(loader)) if progress else loader


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    device: torch.device, epoch: int, scheduler: Any = None,
                    forward: Optional[Forward] = None, loss: Optional[LossFn] = None,
                    progress: Optional[Progress] = None, desc: str | None = None,
                    grad_clip: Optional[float] = None) -> dict[str, float]:
    """One pass over ``loader``: zero grads, loss, backward, (gradient-norm
    clip at ``grad_clip``), step. The scheduler (if any) steps once, after
    the epoch. Returns the mean loss and accuracy over samples. ``epoch`` is
    0-based (error messages say ``epoch + 1``)."""
    loss_fn = loss or _cross_entropy(forward)
    model.train()
    total, loss_sum, correct = 0, 0.0, 0
    for step, (x, y) in enumerate(_batches(loader, progress, desc), start=1):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        value, logits = loss_fn(model, x, y)
        check_finite(value.detach(), epoch, step)
        value.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        total += y.numel()
        loss_sum += float(value.detach()) * y.numel()
        correct += int((logits.detach().argmax(1) == y).sum())
    if scheduler is not None:
        scheduler.step()
    return {"loss": loss_sum / max(total, 1), "acc": correct / max(total, 1)}


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device,
             forward: Optional[Forward] = None) -> dict[str, float]:
    """Mean cross entropy and accuracy over ``loader`` in eval mode."""
    model.eval()
    total, loss_sum, correct = 0, 0.0, 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = forward(model, x) if forward else model(x)
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        total += y.numel()
    return {"loss": loss_sum / max(total, 1), "acc": correct / max(total, 1)}
