"""Bad params: exit code 2 and one line naming the key, the value and what
is allowed; never a traceback."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flows.cli import main
from nas_core.config import Params, apply_overrides, load_params
from nas_core.spaces import SPACES
from nas_core.strategies import STRATEGIES
from tests.conftest import REPO

BASE = yaml.safe_load((REPO / "params.yaml").read_text())


def write(tmp_path: Path, patch: dict | str) -> Path:
    path = tmp_path / "params.yaml"
    if isinstance(patch, str):
        path.write_text(patch)
        return path
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    for dotted, value in patch.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump(raw))
    return path


BAD = [
    ({"subsett": {"fraction": 0.5}}, ["subsett", "did you mean 'subset'"]),
    ({"subset.fracton": 0.5}, ["subset.fracton", "did you mean 'subset.fraction'"]),
    ({"subset.fraction": 1.5}, ["subset.fraction", "1.5", "less than or equal to 1"]),
    ({"strategies.fbnet.weight_fraction": 0.0}, ["strategies.fbnet.weight_fraction", "0.0", "greater than 0"]),
    ({"runtime.device": "tpu"}, ["runtime.device", "'tpu'", "pattern"]),
    ({"runtime.seed": -1}, ["runtime.seed", "-1", "greater than or equal to 0"]),
    ({"runtime.task_runner": "spark"}, ["runtime.task_runner", "'spark'", "'thread', 'dask' or 'ray'"]),
    ({"tracking.retries": "many"}, ["tracking.retries", "'many'", "integer"]),
    ({"strategies.fbnet.epochs": 3, "strategies.fbnet.warmup_epochs": 3},
     ["strategies.fbnet.warmup_epochs", "3", "strategies.fbnet.epochs = 3"]),
    ({"search.strategy": "dartz"}, ["search.strategy", "'dartz'", "did you mean 'darts'"]),
    ({"search.space": "cell"}, ["search.space", "'cell'", "strategy 'fbnet' searches layerwise"]),
    ({"strategies.pc_darts.w_lrr": 0.1}, ["strategies.pc_darts.w_lrr", "did you mean 'strategies.pc_darts.w_lr'"]),
    ({"strategies.pc_darts.init_channels": 6}, ["strategies.pc_darts", "pc_k"]),
    ({"spaces.cell.op_set": "S9"}, ["spaces.cell.op_set", "'S9'"]),
    ({"spaces.layerwise.preset": "digitz"}, ["spaces.layerwise.preset", "did you mean 'digits'"]),
    ({"dcnas_sample.num_samples": 4, "dcnas_cluster.k": 5},
     ["dcnas_cluster.k", "5", "<= dcnas_sample.num_samples (4)"]),
    ({"dcnas_features.epochs": [3, 1]}, ["dcnas_features.epochs", "[3, 1]", "increasing"]),
    ({"data.holdout_test_fraction": 0.5, "subset.val_fraction": 0.45}, ["subset.val_fraction", "0.45", "10%"]),
    ({"data.source": "mnits"}, ["data.source", "'mnits'", "did you mean 'mnist'"]),
    ({"subset.probe_size": 100000}, ["subset.probe_size", "100000", "size of D~"]),
    ({"strategies.random.trials": 0}, ["strategies.random.trials", "0", "greater than or equal to 1"]),
    ({"strategies.evolution.evaluator": "trian"}, ["strategies.evolution.evaluator", "'trian'", "train"]),
    ({"evaluate.evaluator": "proxy"}, ["evaluate.evaluator", "'proxy'", "zero_cost"]),
    ({"search.strategy": "hier_evolution", "search.space": "layerwise"},
     ["search.space", "'layerwise'", "strategy 'hier_evolution' searches hierarchical"]),
    ("subset: [1, 2\n", ["params.yaml", "not valid YAML"]),
    ("- just\n- a list\n", ["params.yaml", "mapping"]),
]


@pytest.mark.parametrize("patch,expected", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_params_exit_2_with_key_named(tmp_path, capsys, monkeypatch, patch, expected):
    monkeypatch.chdir(REPO)
    code = main(["check", "--params", str(write(tmp_path, patch))])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for part in expected:
        assert part in lines[0], (part, lines[0])


def test_committed_params_are_valid_and_complete():
    params = load_params(REPO / "params.yaml")
    assert isinstance(params, Params)
    assert params.data.source == "digits"
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert sorted(raw["strategies"]) == STRATEGIES.names()  # every registered strategy has its section
    assert sorted(raw["spaces"]) == SPACES.names()


def test_overriding_the_strategy_moves_the_space_to_one_it_searches():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert apply_overrides(raw, {"search.strategy": "darts"})["search"] == {"strategy": "darts", "space": "cell"}
    assert apply_overrides(raw, {"search.strategy": "fbnet"})["search"]["space"] == "layerwise"


def test_missing_params_file_named(tmp_path, capsys):
    assert main(["check", "--params", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: params file not found" in capsys.readouterr().err


def test_an_override_rewrites_only_its_value_and_keeps_nulls_and_comments(tmp_path):
    from flows.pipeline import write_overrides

    original = (REPO / "params.yaml").read_text()
    path = tmp_path / "params.yaml"
    path.write_text(original)
    write_overrides(path, {"ablation.repeats": 3})
    changed = [(a, b) for a, b in zip(original.splitlines(), path.read_text().splitlines()) if a != b]
    assert len(changed) == 1 and "repeats: 3" in changed[0][1] and "# R independent" in changed[0][1]
