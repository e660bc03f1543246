import threading

import torch
from torch import nn
from torch.utils.data import TensorDataset

from nas_core.train.fit import Augmented, FitSettings, augmentation, fit, seeded


def data(n: int, seed: int) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=gen)
    x = 0.5 * torch.randn(n, 1, 8, 8, generator=gen) + 2.0 * y.view(-1, 1, 1, 1).float()
    return TensorDataset(x, y)


def model() -> nn.Module:
    with seeded(0):
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(4, 3))


def test_fit_learns_and_reports_cosine_lr():
    settings = FitSettings(epochs=4, batch_size=16, lr=0.1, augment=True, seed=1)
    res = fit(model(), data(96, 0), data(48, 1), settings, torch.device("cpu"), test_set=data(48, 2),
              dataset="digits")
    assert [r["epoch"] for r in res.history] == [1, 2, 3, 4]
    assert res.history[0]["lr"] == 0.1 and res.history[1]["lr"] < 0.1  # cosine annealing per epoch
    assert res.val_acc == res.history[-1]["val_acc"] and res.best_val_acc >= res.val_acc
    assert res.test_acc is not None and res.test_acc > 0.5
    assert set(res.state_dict) == set(model().state_dict())


def test_same_seed_same_result_even_in_parallel_threads():
    settings = FitSettings(epochs=2, batch_size=16, lr=0.05, augment=True, seed=3)
    alone = fit(model(), data(64, 0), data(32, 1), settings, torch.device("cpu"), dataset="digits").history
    out: list = [None, None]

    def work(i: int) -> None:
        out[i] = fit(model(), data(64, 0), data(32, 1), settings, torch.device("cpu"), dataset="digits").history

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out[0] == alone and out[1] == alone


def test_augmentation_per_dataset():
    assert augmentation("fake", (3, 32, 32)) is None
    aug = Augmented(data(4, 0), augmentation("cifar10", (1, 8, 8)), seed=0)
    a0, _ = aug[0]
    assert a0.shape == (1, 8, 8) and torch.equal(aug[0][0], a0)  # same (seed, epoch, index): same image
    aug.epoch = 1
    assert not torch.equal(aug[0][0], a0)
