"""Kill-and-resume equals an uninterrupted run (bit-identical on the CPU);
corrupt checkpoints fall back to the previous one; NaN stops with epoch and
step named and earlier checkpoints intact."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from fbnet_entry import FINGERPRINT, NanAfter, make_strategy, tiny_datasets

from nas_core.train import CorruptCheckpointWarning, list_checkpoints, load_checkpoint, run_resumable
from nas_core.train.loop import NonFiniteLossError

EPOCHS = 4
ENTRY = Path(__file__).with_name("fbnet_entry.py")


class Killed(Exception):
    pass


class KillAfter:
    """Raises once ``epoch`` checkpoints are written (like a kill then)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, strategy, epoch, metrics) -> None:
        if epoch == self.epoch:
            raise Killed


def train(directory: Path, callbacks=()) -> None:
    strategy, data = make_strategy(EPOCHS)
    run_resumable(strategy, data, directory, FINGERPRINT, callbacks)


def assert_same_final_state(a: Path, b: Path) -> None:
    sa = load_checkpoint(a / f"epoch_{EPOCHS:03d}.pt")
    sb = load_checkpoint(b / f"epoch_{EPOCHS:03d}.pt")
    assert sa["supernet"].keys() == sb["supernet"].keys()
    for key in sa["supernet"]:
        assert torch.equal(sa["supernet"][key], sb["supernet"][key]), key
    assert torch.equal(sa["theta_history"], sb["theta_history"])
    assert sa["history"] == sb["history"]
    assert not torch.equal(sa["supernet"]["theta"], torch.zeros_like(sa["supernet"]["theta"]))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("uninterrupted")
    train(directory)
    return directory


def test_resume_after_half_the_epochs_is_bit_identical(reference: Path, tmp_path: Path) -> None:
    with pytest.raises(Killed):
        train(tmp_path, [KillAfter(EPOCHS // 2)])
    assert [e for e, _ in list_checkpoints(tmp_path)] == [1, 2]
    train(tmp_path)
    assert [e for e, _ in list_checkpoints(tmp_path)] == [1, 2, 3, 4]
    assert_same_final_state(reference, tmp_path)


def test_corrupt_checkpoint_is_reported_and_training_restarts_from_the_previous(reference: Path,
                                                                                 tmp_path: Path) -> None:
    with pytest.raises(Killed):
        train(tmp_path, [KillAfter(3)])
    path = tmp_path / "epoch_003.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.warns(CorruptCheckpointWarning, match=r"epoch_003\.pt is corrupt"):
        train(tmp_path)
    assert (tmp_path / "epoch_003.pt.corrupt").exists()
    assert_same_final_state(reference, tmp_path)


def test_nan_loss_stops_with_epoch_and_step_and_keeps_earlier_checkpoints(tmp_path: Path) -> None:
    poisoned = NanAfter(tiny_datasets()[0])

    class Arm:
        def on_epoch_end(self, strategy, epoch, metrics) -> None:
            poisoned.armed = epoch == 2

    strategy, data = make_strategy(EPOCHS, train_w=poisoned)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss nan at epoch 3, step 1"):
        run_resumable(strategy, data, tmp_path, FINGERPRINT, [Arm()])
    assert [e for e, _ in list_checkpoints(tmp_path)] == [1, 2]
    for _, path in list_checkpoints(tmp_path):
        assert torch.isfinite(load_checkpoint(path)["supernet"]["theta"]).all()


def run_entry(out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ENTRY.parents[2]), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(ENTRY), str(out), str(EPOCHS), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_equals_an_uninterrupted_run(reference: Path, tmp_path: Path) -> None:
    """The subprocess runs on one thread, like this module (conftest), so
    the in-process uninterrupted run is the reference."""
    proc = run_entry(tmp_path, "--sleep", "0.5")
    deadline = time.monotonic() + 240
    while not (tmp_path / "epoch_002.pt.sha256").exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "the run did not reach epoch 2"
        time.sleep(0.05)
    time.sleep(0.2)  # inside epoch 3 or its sleep
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert 2 <= max(e for e, _ in list_checkpoints(tmp_path)) < EPOCHS
    resumed = run_entry(tmp_path)
    output = resumed.communicate(timeout=240)[0]
    assert resumed.returncode == 0, output
    assert_same_final_state(reference, tmp_path)
