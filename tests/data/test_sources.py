from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
import yaml

from flows.cli import main
from nas_core.config import DataConfig
from nas_core.data import SOURCES, DataError, load_source, materialize_digits
from nas_core.data.sources import training_statistics
from tests.conftest import MNIST_T10K, REPO


def test_digits_materialised_byte_for_byte(tmp_path):
    a = materialize_digits(tmp_path / "a")
    b = materialize_digits(tmp_path / "b")
    for name in ("images.npy", "labels.npy"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
        assert (a / name).read_bytes() == (REPO / "data" / "digits" / name).read_bytes()


def test_digits_items_are_normalised_tensors():
    source = load_source(DataConfig(), REPO)
    x, y = source.train[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32 and isinstance(y, int)
    assert source.num_classes == 10 and len(source.train_targets) == 1797 and source.test is None
    stacked = torch.stack([source.train[i][0] for i in range(len(source.train))])
    assert stacked.min() >= 0 and stacked.max() <= 1  # scaled only, until the training statistics are set
    stats = training_statistics(source, np.arange(len(source.train)), seed=0)
    source.norm.set(stats["mean"], stats["std"])
    stacked = torch.stack([source.train[i][0] for i in range(len(source.train))])
    assert abs(stacked.mean().item()) < 0.05 and abs(stacked.std().item() - 1) < 0.05


@pytest.mark.skipif(not MNIST_T10K.is_dir(), reason="real MNIST test set not present")
def test_mnist_reads_real_t10k_gz():
    source = load_source(DataConfig(source="mnist", root=str(MNIST_T10K)), REPO)
    assert len(source.train) == 10_000 and source.input_shape == (1, 28, 28)
    assert source.test is None  # only t10k: the pool, a test split is held out
    assert np.bincount(source.train_targets).min() > 800


def test_missing_mnist_root_names_files_and_dvc_add(tmp_path, capsys, monkeypatch):
    params = tmp_path / "params.yaml"
    raw = yaml.safe_load((REPO / "params.yaml").read_text())  # a complete file (a partial one is an error)
    raw["data"].update(source="mnist", root=str(tmp_path / "none"))
    params.write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    assert main(["check", "--params", str(params)]) == 2
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte[.gz]" in err and "t10k-labels-idx1-ubyte[.gz]" in err
    assert "dvc add data" in err and "Traceback" not in err


def test_truncated_idx_is_reported(tmp_path):
    raw = bytes([0, 0, 8, 3]) + np.array([5, 28, 28], ">u4").tobytes() + bytes(100)
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(tmp_path / f"{stem}.gz", "wb") as f:
            f.write(raw)
    with pytest.raises(DataError, match="truncated IDX"):
        load_source(DataConfig(source="mnist", root=str(tmp_path)), REPO)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "imagefolder"])
def test_missing_torchvision_roots_are_clear(tmp_path, name):
    with pytest.raises(DataError, match="dvc add data"):
        load_source(DataConfig(source=name, root=str(tmp_path)), REPO)


def test_every_registered_source_is_listed(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in SOURCES.names():
        assert name in out


def test_fake_source_gives_declared_shape():
    source = load_source(DataConfig(source="fake", fake={"num_samples": 20, "image_shape": (3, 16, 16)}), REPO)
    x, _ = source.train[3]
    assert x.shape == (3, 16, 16) and len(source.train_targets) == 20
