"""Search strategies under torchrun: the DDP variant of a strategy class
(:func:`data_parallel`) and its per-rank loaders (:func:`shard_search_data`).
The process group, sharding and DDP wrapping are nas_core.train.distributed;
see its docstring for how an N-process run relates to the one-process run.
FBNet runs its loss through DistributedDataParallel; the cell strategies
(DARTS family) average every gradient over the ranks themselves, because
DARTS's second-order architecture gradient is built from several
``autograd.grad`` calls (over unrolled weights) that DDP's hooks do not see.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import torch
from torch import nn

from nas_core.strategies.base import SearchData
from nas_core.strategies.fbnet import FBNetStrategy
from nas_core.train.distributed import (LossModule, average_over_ranks, broadcast_, broadcast_object,
                                        is_distributed, is_main, mean_over_ranks, quiet_progress, shard_loader,
                                        sync_buffers, wrap_ddp)


def shard_search_data(data: SearchData) -> SearchData:
    """:func:`shard_loader` on the training loaders; ``val`` stays whole
    (every rank evaluates the same model on all of it)."""
    return SearchData(shard_loader(data.train_w), shard_loader(data.train_a), data.val)


class ResumeFromRank0:
    """Mixed in before a strategy class: a resumed run starts every rank from
    rank 0's state (only rank 0 reads the real checkpoint directory), so all
    ranks train the same epochs."""

    def run(self, data: SearchData, callbacks: Any = (), state: dict[str, Any] | None = None) -> Any:
        return super().run(data, callbacks, broadcast_object(state))  # type: ignore[misc]


class DistributedFBNet(ResumeFromRank0, FBNetStrategy):
    """:class:`FBNetStrategy` with its loss run through DDP. Hooks used:
    ``setup`` (builds ``self.net``, the optimisers and ``self.lat_table``)
    and ``loss_fn`` (the loss ``train_epoch`` trains with); the lifecycle,
    state_dict and resume are FBNet's own. Give it :func:`shard_search_data`
    loaders. A resumed run starts every rank from rank 0's checkpoint. With
    one process it behaves exactly as FBNetStrategy."""

    def setup(self, data: SearchData) -> None:
        super().setup(data)
        if not is_distributed():
            return
        self.latency = broadcast_object(self.latency)
        self.lat_table = broadcast_(self.lat_table.contiguous())
        self.ddp = wrap_ddp(LossModule(self.net), self.device)
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


class DataParallelCell(ResumeFromRank0):
    """Mixed in before a cell strategy class (:func:`data_parallel`): every
    gradient of the search (weights, α, DARTS's unrolled terms) is averaged
    over the ranks (``grads``), so each rank takes the one-process step of
    the whole batch; the networks of every stage start from rank 0's
    initialisation; evaluation uses rank 0's BatchNorm statistics; the
    training loss and accuracy are means over the ranks. A resumed run
    starts every rank from rank 0's checkpoint."""

    net: nn.Module
    arch: nn.Module

    def _build(self, cells: int, schedule_epochs: int) -> None:
        super()._build(cells, schedule_epochs)  # type: ignore[misc]
        for tensor in [*self.net.parameters(), *self.net.buffers(), *self.arch.parameters()]:
            broadcast_(tensor.data)

    def grads(self, loss: torch.Tensor, params: list[torch.Tensor],
              unused_as_none: bool = False) -> list[Optional[torch.Tensor]]:
        return average_over_ranks(super().grads(loss, params, unused_as_none))  # type: ignore[misc]

    def evaluate(self, loader: Any) -> dict[str, float]:
        sync_buffers(self.net)
        return super().evaluate(loader)  # type: ignore[misc]

    def train_epoch(self, epoch: int, data: SearchData) -> dict[str, float]:
        metrics = super().train_epoch(epoch, data)  # type: ignore[misc]
        return {**metrics, **mean_over_ranks({"loss": metrics["loss"], "acc": metrics["acc"]})}


@functools.cache
def _cell_variant(strategy_cls: type) -> type:
    return type(f"DataParallel{strategy_cls.__name__}", (DataParallelCell, strategy_cls), {})


def data_parallel(strategy_cls: type) -> type:
    """The data-parallel variant of a strategy class when running
    distributed (FBNet: :class:`DistributedFBNet`; a cell strategy: the class
    with :class:`DataParallelCell` mixed in), else the class itself."""
    if not is_distributed():
        return strategy_cls
    if issubclass(strategy_cls, FBNetStrategy):
        return DistributedFBNet
    if getattr(strategy_cls, "space_kind", None) == "cell":
        return _cell_variant(strategy_cls)
    raise ValueError(f"strategy {getattr(strategy_cls, 'name', strategy_cls)!r} has no data-parallel variant "
                     f"(torchrun supports fbnet and the cell strategies)")
