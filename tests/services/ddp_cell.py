"""A cell strategy (DARTS family) on the tiny cell space for two epochs on
real 8×8 digits: run as a plain process or under `torchrun`; rank 0 saves
α (and β; α of normal cells after each epoch), the history and whether the architecture parameters were
identical on every rank after each epoch.

usage: ddp_cell.py OUT.pt STRATEGY [--order 2] [--exact]   (--order: strategies that have the key)

``--exact`` leaves out what is expected to differ from a one-process run:
BatchNorm (identity in place of every BatchNorm2d; on the CPU each rank
normalises with its own batch statistics) and P-DARTS's skip dropout (each
rank draws masks for its own share of the batch). The two runs must then
agree closely."""
from __future__ import annotations

import argparse

import torch

from nas_core.strategies import STRATEGIES, create_strategy
from nas_core.strategies.data_parallel import shard_search_data
from nas_core.train import distributed as ddp
from tests.strategies.darts_helpers import digits_data, tiny_params, tiny_space


class ArchCheck:
    def __init__(self) -> None:
        self.same: list[bool] = []
        self.alpha: list[torch.Tensor] = []

    def on_epoch_end(self, strategy, epoch, metrics) -> None:
        self.same.append(all(ddp.same_on_all_ranks(p.detach()) for p in strategy.arch.parameters()))
        self.alpha.append(strategy.arch.alpha("normal").detach().clone())


def main(args: argparse.Namespace) -> None:
    device = ddp.init_from_env(torch.device("cpu"))
    torch.set_num_threads(1)
    torch.manual_seed(0)  # the loaders shuffle with the global RNG
    keys = STRATEGIES.get(args.strategy).Config.model_fields
    extra = {"order": args.order} if "order" in keys else {}
    if args.exact and "skip_dropout" in keys:
        extra["skip_dropout"] = [0.0, 0.0]
    params = tiny_params(args.strategy, epochs=2, w_lr=0.05, **extra)
    strategy = create_strategy(args.strategy, tiny_space(), params, device, seed=0)  # torchrun: the variant
    check = ArchCheck()
    result = strategy.run(shard_search_data(digits_data(n_w=48, n_a=32, n_val=16, batch=16)), [check])
    if ddp.is_main():
        torch.save({"arch": {k: v.detach().clone() for k, v in strategy.arch.state_dict().items()},
                    "history": result.history, "same": check.same, "alpha_per_epoch": check.alpha,
                    "world": ddp.world_size(),
                    "class": type(strategy).__name__}, args.out)
    ddp.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("strategy")
    parser.add_argument("--order", type=int, default=1)
    parser.add_argument("--exact", action="store_true")
    arguments = parser.parse_args()
    if arguments.exact:
        torch.nn.BatchNorm2d = lambda channels, *a, **k: torch.nn.Identity()
    main(arguments)
