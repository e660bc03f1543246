"""The search stage's persistent output holds one strategy's files: a run
with another strategy than the previous one starts from an empty directory,
a rerun of the same strategy keeps its checkpoints (for resuming)."""
from __future__ import annotations

from tasks.search import STRATEGY_FILE, keep_one_strategy


def previous_run(out, strategy: str) -> None:
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "epoch_001.pt").write_bytes(b"state")
    (out / "probabilities.csv").write_text("layer,op\n")
    (out / STRATEGY_FILE).write_text(strategy + "\n")


def test_switching_strategy_removes_the_previous_strategys_files(tmp_path):
    previous_run(tmp_path, "fbnet")
    keep_one_strategy(tmp_path, "pc_darts")
    assert sorted(p.name for p in tmp_path.iterdir()) == [STRATEGY_FILE]
    assert (tmp_path / STRATEGY_FILE).read_text() == "pc_darts\n"


def test_same_strategy_keeps_its_checkpoints(tmp_path):
    previous_run(tmp_path, "pc_darts")
    keep_one_strategy(tmp_path, "pc_darts")
    assert (tmp_path / "checkpoints" / "epoch_001.pt").read_bytes() == b"state"
    assert (tmp_path / "probabilities.csv").is_file()


def test_first_run_only_writes_the_marker(tmp_path):
    keep_one_strategy(tmp_path, "fbnet")
    assert sorted(p.name for p in tmp_path.iterdir()) == [STRATEGY_FILE]
