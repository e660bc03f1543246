"""Checkpoint files: atomic, hashed, loaded with weights_only=True."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from nas_core.train import (
    CorruptCheckpointError,
    CorruptCheckpointWarning,
    latest_good_checkpoint,
    list_checkpoints,
    load_checkpoint,
    resume_state,
    save_checkpoint,
)
from nas_core.train.checkpoint import rng_state, set_rng_state


def state(epoch: int) -> dict:
    return {"model": {"w": torch.full((3,), float(epoch))}, "epoch": epoch, "fingerprint": "a",
            "history": [{"loss": 1.0 / epoch}]}


def test_round_trip_and_listing_by_epoch(tmp_path: Path) -> None:
    for epoch in (2, 1, 10):
        save_checkpoint(tmp_path, epoch, state(epoch))
    assert [(e, p.name) for e, p in list_checkpoints(tmp_path)] == [
        (1, "epoch_001.pt"), (2, "epoch_002.pt"), (10, "epoch_010.pt")]
    loaded = load_checkpoint(tmp_path / "epoch_002.pt")
    assert torch.equal(loaded["model"]["w"], torch.full((3,), 2.0)) and loaded["history"] == [{"loss": 0.5}]
    assert not list(tmp_path.glob("*.tmp"))


def test_a_checkpoint_without_its_hash_is_incomplete_and_ignored(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 1, state(1))
    torch.save(state(2), tmp_path / "epoch_002.pt")  # killed before the sidecar was written
    assert [e for e, _ in list_checkpoints(tmp_path)] == [1]
    with pytest.raises(CorruptCheckpointError, match="epoch_002.pt is incomplete"):
        load_checkpoint(tmp_path / "epoch_002.pt")


def test_corruption_names_the_file_and_falls_back(tmp_path: Path) -> None:
    for epoch in (1, 2):
        save_checkpoint(tmp_path, epoch, state(epoch))
    bad = tmp_path / "epoch_002.pt"
    bad.write_bytes(bad.read_bytes()[:-20])
    with pytest.raises(CorruptCheckpointError, match=r"epoch_002\.pt is corrupt: sha256"):
        load_checkpoint(bad)
    with pytest.warns(CorruptCheckpointWarning, match="epoch_002.pt"):
        epoch, loaded = latest_good_checkpoint(tmp_path)
    assert epoch == 1 and loaded["epoch"] == 1
    assert (tmp_path / "epoch_002.pt.corrupt").exists() and not bad.exists()


def test_loading_refuses_pickled_code(tmp_path: Path) -> None:
    import nas_core.io as nio

    path = tmp_path / "epoch_001.pt"
    torch.save({"evil": Path("x")}, path)  # an arbitrary class: weights_only must refuse it
    (tmp_path / "epoch_001.pt.sha256").write_text(nio.sha256_file(path))
    with pytest.raises(CorruptCheckpointError, match="cannot be loaded"):
        load_checkpoint(path)


def test_other_settings_start_afresh(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 1, state(1))
    assert resume_state(tmp_path, "a")["epoch"] == 1
    with pytest.warns(UserWarning, match="other settings"):
        assert resume_state(tmp_path, "b") is None
    assert list_checkpoints(tmp_path) == []


def test_rng_states_survive_a_weights_only_round_trip(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    save_checkpoint(tmp_path, 1, {"rng": rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(load_checkpoint(tmp_path / "epoch_001.pt")["rng"])
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(1), expected[2])
