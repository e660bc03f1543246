"""FBNet on the tiny digits space for two epochs (one warm-up, one with θ
updates) on seeded random 8×8 images: run as a plain process or under
`torchrun`; rank 0 saves θ, the history and whether θ was identical on
every rank after each epoch.

usage: ddp_fbnet.py OUT.pt [--no-batchnorm]

``--no-batchnorm`` builds the network with identity in place of every
BatchNorm2d: on the CPU each rank normalises with its own batch statistics
(SyncBatchNorm is CUDA-only), the one expected difference from a
one-process run, so without BatchNorm the two runs must agree closely."""
from __future__ import annotations

import sys

import numpy as np
import torch
from torch.utils.data import TensorDataset

from nas_core.runtime import seed_everything
from nas_core.spaces import make_space
from nas_core.spaces.layerwise import LatencyTable
from nas_core.strategies import SearchData, create_strategy
from nas_core.strategies.data_parallel import shard_search_data
from nas_core.train import distributed as ddp
from nas_core.train.loop import make_loader

BATCH = 16


class ThetaCheck:
    def __init__(self) -> None:
        self.same: list[bool] = []

    def on_epoch_end(self, strategy, epoch, metrics) -> None:
        self.same.append(ddp.same_on_all_ranks(strategy.supernet.theta.detach()))


def tiny_data() -> tuple[TensorDataset, TensorDataset]:
    g = torch.Generator().manual_seed(123)
    x, y = torch.randn(96, 1, 8, 8, generator=g), torch.randint(0, 10, (96,), generator=g)
    return TensorDataset(x[:64], y[:64]), TensorDataset(x[64:], y[64:])


def main(out: str) -> None:
    device = ddp.init_from_env(torch.device("cpu"))
    torch.set_num_threads(1)
    seed_everything(0)
    space = make_space("layerwise", {"preset": "digits"}, (1, 8, 8), 10)
    ms = np.linspace(0.5, 2.0, space.num_layers * space.num_ops).reshape(space.num_layers, space.num_ops)
    latency = LatencyTable(space.name, space.preset, tuple(space.input_shape), tuple(space.op_names), "cpu", ms)
    config = {"epochs": 2, "warmup_epochs": 1, "batch_size": BATCH}
    train_w, train_a = tiny_data()
    data = SearchData(make_loader(train_w, BATCH, True, 0), make_loader(train_a, BATCH, True, 1))
    strategy = create_strategy("fbnet", space.with_latency(latency), config, device, 0)  # torchrun: DistributedFBNet
    check = ThetaCheck()
    result = strategy.run(shard_search_data(data), [check])
    if ddp.is_main():
        torch.save({"theta": torch.as_tensor(result.extras["theta"]), "history": result.history,
                    "same": check.same, "world": ddp.world_size(),
                    "class": type(strategy).__name__}, out)
    ddp.cleanup()


if __name__ == "__main__":
    if "--no-batchnorm" in sys.argv:
        torch.nn.BatchNorm2d = lambda channels, *args, **kwargs: torch.nn.Identity()
    main(sys.argv[1])
