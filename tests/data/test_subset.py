from __future__ import annotations

import json

import numpy as np
import pytest
from torch.utils.data import Subset

from nas_core.config import DataConfig, SubsetConfig
from nas_core.data import DataError, load_source, make_splits, weight_split, write_splits
from nas_core.data.subset import load_splits
from tests.conftest import REPO


@pytest.fixture(scope="module")
def digits():
    return load_source(DataConfig(), REPO)


def splits_for(source, seed=0, **kw):
    return make_splits(source.train_targets, source.test_targets, DataConfig(), SubsetConfig(**kw), seed)


def test_same_seed_same_indices_other_seed_differs(digits):
    a, b, c = splits_for(digits, 0), splits_for(digits, 0), splits_for(digits, 1)
    for name in a.indices:
        assert np.array_equal(a.indices[name], b.indices[name])
    assert not np.array_equal(a.indices["subset"], c.indices["subset"])


def test_splits_partition_the_pool(digits):
    s = splits_for(digits).indices
    pool = np.concatenate([s["full_train"], s["val"], s["test"]])
    assert len(np.unique(pool)) == len(pool) == len(digits.train_targets)
    assert set(s["subset"]) <= set(s["full_train"])
    assert set(s["probe"]) <= set(s["subset"])


def test_subset_is_stratified(digits):
    s = splits_for(digits, fraction=0.3).indices
    y = digits.train_targets
    full = np.bincount(y[s["full_train"]], minlength=10) / len(s["full_train"])
    sub = np.bincount(y[s["subset"]], minlength=10) / len(s["subset"])
    assert np.abs(full - sub).max() < 0.01


@pytest.mark.parametrize("fraction", [0.8, 0.5])
def test_strategy_weight_split_partitions_d_tilde_stratified(digits, fraction):
    s = splits_for(digits, fraction=0.3).indices
    y = digits.train_targets
    train_w, train_a = weight_split(y, s["subset"], fraction, seed=0)
    assert np.array_equal(np.sort(np.concatenate([train_w, train_a])), s["subset"])
    assert abs(len(train_w) / len(s["subset"]) - fraction) < 0.01
    share = np.bincount(y[train_w], minlength=10) / len(train_w)
    assert np.abs(share - np.bincount(y[s["subset"]], minlength=10) / len(s["subset"])).max() < 0.02
    again, _ = weight_split(y, s["subset"], fraction, seed=0)
    assert np.array_equal(train_w, again)


def test_a_weight_split_too_small_to_stratify_names_the_key(digits):
    s = splits_for(digits, fraction=0.02, probe_size=10).indices
    with pytest.raises(DataError, match="strategies.darts.weight_fraction = 0.99"):
        weight_split(digits.train_targets, s["subset"], 0.99, seed=0, key="strategies.darts.weight_fraction")


def test_manifest_hashes_and_lazy_views(digits, tmp_path):
    splits = splits_for(digits)
    manifest = write_splits(splits, digits, tmp_path, seed=0)
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(manifest))
    assert all(len(info["sha256"]) == 64 for info in on_disk["splits"].values())
    _, views = load_splits(DataConfig(), REPO, tmp_path)
    assert len(views["probe"]) == 256
    assert all(isinstance(v, Subset) for v in views.values())  # index views, no copies
    x, y = views["val"][0]
    assert x.shape == (1, 8, 8) and y == int(digits.train_targets[splits.indices["val"][0]])
