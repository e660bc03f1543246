"""Train a small convolutional network with nas_core.train.fit (the
retraining of the evaluate and retrain stages) for two epochs on seeded
random 8×8 images with the digits augmentation: run as a plain process or
under `torchrun`; rank 0 saves the weights, the history, the test accuracy
and whether the weights, buffers and reported numbers were identical on
every rank.

usage: ddp_fit.py OUT.pt [--no-batchnorm]

``--no-batchnorm`` leaves BatchNorm out: on the CPU each rank normalises
its training batches with its own statistics, the one expected difference
from a one-process run, so without it the two runs must agree closely."""
from __future__ import annotations

import sys

import torch
from torch import nn
from torch.utils.data import TensorDataset

from nas_core.train import distributed as ddp
from nas_core.train.fit import FitSettings, fit, seeded


def data(n: int, seed: int) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=gen)
    x = 0.7 * torch.randn(n, 1, 8, 8, generator=gen) + y.view(-1, 1, 1, 1).float()
    return TensorDataset(x, y)


def network(batchnorm: bool) -> nn.Module:
    norm = nn.BatchNorm2d(6) if batchnorm else nn.Identity()
    with seeded(0):
        return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), norm, nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(6, 3))


def main(out: str, batchnorm: bool) -> None:
    device = ddp.init_from_env(torch.device("cpu"))
    torch.set_num_threads(1)
    model = network(batchnorm)
    settings = FitSettings(epochs=2, batch_size=16, lr=0.1, augment=True, seed=5)
    result = fit(model, data(64, 0), data(27, 1), settings, device, test_set=data(33, 2), dataset="digits")
    tensors = list(model.state_dict().values())
    reported = torch.tensor([result.val_acc, result.test_acc, result.history[-1]["train_loss"]])
    same = [ddp.same_on_all_ranks(t) for t in tensors] + [ddp.same_on_all_ranks(reported)]
    if ddp.is_main():
        torch.save({"state": result.state_dict, "history": result.history, "test_acc": result.test_acc,
                    "same": all(same), "world": ddp.world_size()}, out)
    ddp.cleanup()


if __name__ == "__main__":
    main(sys.argv[1], "--no-batchnorm" not in sys.argv)
