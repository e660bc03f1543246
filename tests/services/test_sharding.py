"""The per-rank loaders of nas_core.train.distributed, without processes:
the ranks' batches of a step together are the one-process batch."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from nas_core.spaces import make_space
from nas_core.strategies import SearchData, create_strategy
from nas_core.strategies.data_parallel import shard_search_data
from nas_core.strategies.fbnet import DistributedFBNet, FBNetStrategy
from nas_core.train.distributed import shard_loader
from nas_core.train.loop import make_loader, reseed


def labels(loader) -> list[list[int]]:
    return [y.tolist() for _, y in loader]


@pytest.mark.parametrize("reseeded", [True, False])
@pytest.mark.parametrize("n", [64, 70])
def test_rank_batches_together_are_the_one_process_batch(n, reseeded):
    """Also without reseeding per epoch (nas_core.train.fit): the ranks'
    generators advance as the one-process loader's does, epoch after epoch."""
    data = TensorDataset(torch.zeros(n, 1), torch.arange(n))
    single = make_loader(data, 16, True, seed=3)
    shards = [shard_loader(make_loader(data, 16, True, seed=3), rank, 2) for rank in range(2)]
    for epoch in range(3):
        for loader in (single, *shards):
            if reseeded:
                reseed(loader, 100 + epoch)
        one, ranks = labels(single), [labels(s) for s in shards]
        assert len(ranks[0]) == len(ranks[1])  # every rank takes the same number of steps
        for step, batch in enumerate(one):
            together = ranks[0][step] + ranks[1][step]
            if len(batch) == 16:
                assert sorted(together) == sorted(batch)
        covered = {i for r in ranks for b in r for i in b}
        assert covered == set(range(n))


def test_unsplittable_batch_is_a_clear_error():
    loader = make_loader(TensorDataset(torch.zeros(8, 1), torch.arange(8)), 5, True)
    with pytest.raises(ValueError, match="batch size 5 cannot be split over 2 processes"):
        shard_loader(loader, 0, 2)


def test_one_process_changes_nothing():
    loader = make_loader(TensorDataset(torch.zeros(8, 1), torch.arange(8)), 4, True)
    assert shard_loader(loader) is loader
    data = shard_search_data(SearchData(loader, loader, loader))
    assert data.train_w is loader and data.train_a is loader and data.val is loader
    space = make_space("layerwise", None, (1, 8, 8), 10)
    assert type(create_strategy("fbnet", space, {"epochs": 2, "warmup_epochs": 1})) is FBNetStrategy
    assert FBNetStrategy.data_parallel() is DistributedFBNet  # what create_strategy builds under torchrun
