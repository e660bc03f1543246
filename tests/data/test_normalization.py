"""Normalisation statistics come from the training split only: changing
test (or validation) images leaves them unchanged, changing a training
image does not, and every split is normalised with them."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nas_core.config import DataConfig, SubsetConfig
from nas_core.data import load_source, make_splits, materialize_digits, write_splits
from nas_core.data.subset import load_splits


def write_stats(root, out) -> tuple[dict, dict]:
    source = load_source(DataConfig(root=str(root)), root)
    splits = make_splits(source.train_targets, None, DataConfig(), SubsetConfig(), seed=0)
    manifest = write_splits(splits, source, out, seed=0)
    return manifest["normalization"], splits.indices


def rewrite_images(root, indices, value: int) -> None:
    path = root / "digits" / "images.npy"
    images = np.load(path)
    images[indices] = value
    np.save(path, images)


@pytest.fixture()
def digits_root(tmp_path):
    materialize_digits(tmp_path / "data")
    return tmp_path / "data"


def test_statistics_ignore_test_and_validation_images(digits_root, tmp_path):
    before, idx = write_stats(digits_root, tmp_path / "a")
    assert before["split"] == "full_train" and len(before["mean"]) == len(before["std"]) == 1
    rewrite_images(digits_root, np.concatenate([idx["test"], idx["val"]]), 16)  # held-out images all white
    after, _ = write_stats(digits_root, tmp_path / "b")
    assert after == before
    rewrite_images(digits_root, idx["full_train"][:50], 16)  # a training image does move them
    moved, _ = write_stats(digits_root, tmp_path / "c")
    assert moved["mean"][0] > before["mean"][0]


def test_every_split_uses_the_recorded_training_statistics(digits_root, tmp_path):
    stats, idx = write_stats(digits_root, tmp_path / "subset")
    on_disk = json.loads((tmp_path / "subset" / "manifest.json").read_text())["normalization"]
    assert on_disk == stats
    _, views = load_splits(DataConfig(root=str(digits_root)), digits_root, tmp_path / "subset")
    train = torch.stack([views["full_train"][i][0] for i in range(len(views["full_train"]))])
    assert abs(train.mean().item()) < 1e-4 and abs(train.std(unbiased=False).item() - 1) < 1e-4
    raw = np.load(digits_root / "digits" / "images.npy")[idx["test"][0]] / 16.0
    expected = (raw - stats["mean"][0]) / stats["std"][0]
    assert np.allclose(views["test"][0][0].numpy()[0], expected, atol=1e-5)


def test_sampled_statistics_of_a_decoding_source_use_only_the_given_images():
    from nas_core.data.sources import training_statistics

    source = load_source(DataConfig(source="fake", fake={"num_samples": 40, "image_shape": (3, 8, 8)}), ".")
    stats = training_statistics(source, np.arange(20), seed=0)
    first = torch.stack([source.train[i][0] for i in range(20)]).double()
    assert np.allclose(stats["mean"], first.mean(dim=(0, 2, 3)).numpy(), atol=1e-6)
    assert stats != training_statistics(source, np.arange(20, 40), seed=0)
