"""Search strategies under torchrun: what every data-parallel variant
shares. A strategy's variant is its ``data_parallel()`` class (FBNet:
``DistributedFBNet`` in fbnet.py; the cell strategies: their own variant);
it trains on :func:`shard_search_data` loaders and mixes in
:class:`ResumeFromRank0`. The process group, sharding and DDP wrapping are
nas_core.train.distributed; see its docstring for how an N-process run
relates to the one-process run.
"""
from __future__ import annotations

from typing import Any

from nas_core.strategies.base import SearchData
from nas_core.train.distributed import broadcast_object, shard_loader


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
