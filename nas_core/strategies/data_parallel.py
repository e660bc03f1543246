"""Search strategies under torchrun: the DDP variant of a strategy class
(:func:`data_parallel`) and its per-rank loaders (:func:`shard_search_data`).
The process group, sharding and DDP wrapping are nas_core.train.distributed;
see its docstring for how an N-process run relates to the one-process run.
Only FBNet has a data-parallel variant (the DARTS family searches in one
process)."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from nas_core.strategies.base import SearchData
from nas_core.strategies.fbnet import FBNetStrategy
from nas_core.train.distributed import (LossModule, broadcast_, broadcast_object, is_distributed, is_main,
                                        quiet_progress, shard_loader, wrap_ddp)


def shard_search_data(data: SearchData) -> SearchData:
    """:func:`shard_loader` on the training loaders; ``val`` stays whole
    (every rank evaluates the same model on all of it)."""
    return SearchData(shard_loader(data.train_w), shard_loader(data.train_a), data.val)


class DistributedFBNet(FBNetStrategy):
    """:class:`FBNetStrategy` with its loss run through DDP. Hooks used:
    ``setup`` (builds ``self.net``, the optimisers and ``self.lat_table``)
    and ``loss_fn`` (the loss ``train_epoch`` trains with); the lifecycle,
    state_dict and resume are FBNet's own. Give it :func:`shard_search_data`
    loaders. A resumed run starts every rank from rank 0's checkpoint. With
    one process it behaves exactly as FBNetStrategy."""

    def run(self, data: SearchData, callbacks: Any = (), state: dict[str, Any] | None = None) -> Any:
        """Resume every rank from rank 0's state (only rank 0 reads the real
        checkpoint directory), so all ranks train the same epochs."""
        return super().run(data, callbacks, broadcast_object(state))

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


def data_parallel(strategy_cls: type) -> type:
    """The DDP variant of a strategy class when running distributed (only
    FBNet has one), else the class itself."""
    if not is_distributed():
        return strategy_cls
    if issubclass(strategy_cls, FBNetStrategy):
        return DistributedFBNet
    raise ValueError(f"strategy {getattr(strategy_cls, 'name', strategy_cls)!r} has no data-parallel variant "
                     f"(torchrun supports: fbnet)")
