"""``spaces.layerwise.preset: auto`` (the default) picks the FBNet preset
from the input shape as documented (space.py's table), the space and all it
records carry the resolved preset, and ``nasflow check`` warns when an
explicit preset does not fit the data."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from flows.cli import main as nasflow
from nas_core.config import load_params
from nas_core.spaces import make_space
from nas_core.spaces.layerwise import AUTO_PRESET, LayerwiseConfig, flops_latency_table
from tests.conftest import REPO


@pytest.mark.parametrize("shape, preset, layers", [((1, 8, 8), "digits", 6), ((1, 28, 28), "mnist", 7),
                                                   ((3, 32, 32), "cifar", 12), ((3, 224, 224), "imagenet", 22)])
def test_auto_picks_the_documented_preset_and_everything_records_it(shape, preset, layers) -> None:
    space = make_space("layerwise", {"preset": "auto"}, shape, 10)
    assert (space.preset, space.num_layers) == (preset, layers)
    genotype = space.random(np.random.default_rng(0))
    assert genotype.preset == preset and genotype.to_dict()["preset"] == preset
    table = flops_latency_table(space)
    assert table.preset == preset and table.to_dict()["preset"] == preset
    table.check(make_space("layerwise", {"preset": preset}, shape, 10))  # fits the explicit preset's space
    fingerprint = space.fingerprint()["config"]
    assert f"preset={preset!r}" in fingerprint and AUTO_PRESET not in fingerprint


@pytest.mark.parametrize("side, preset", [(14, "digits"), (15, "mnist"), (29, "mnist"), (30, "cifar"),
                                          (84, "cifar"), (85, "imagenet")])
def test_auto_band_edges_as_documented(side, preset) -> None:
    assert make_space("layerwise", {}, (3, side, side), 10).preset == preset
    assert make_space("layerwise", {}, (3, side, 500), 10).preset == preset  # the smaller side decides


def test_auto_is_the_default_and_in_the_committed_params() -> None:
    assert LayerwiseConfig().preset == AUTO_PRESET
    assert load_params(REPO / "params.yaml").spaces.layerwise.preset == AUTO_PRESET
    with pytest.raises(ValueError, match="did you mean 'auto'.*chosen from the input size"):
        LayerwiseConfig(preset="autp")


def check_with_preset(tmp_path: Path, monkeypatch, capsys, preset: str) -> tuple[int, str, str]:
    """``nasflow check`` on the embedded 8x8 digits with the committed params
    and ``spaces.layerwise.preset = preset``."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["spaces"]["layerwise"]["preset"] = preset
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "data").symlink_to(REPO / "data")
    monkeypatch.chdir(tmp_path)
    code = nasflow(["check", "--params", "params.yaml"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_check_warns_when_an_explicit_preset_does_not_fit_the_data(tmp_path, monkeypatch, capsys) -> None:
    code, out, err = check_with_preset(tmp_path, monkeypatch, capsys, "mnist")
    assert code == 0 and "OK" in out
    assert "warning: spaces.layerwise.preset = 'mnist' is made for 28x28 inputs, the data is 1x8x8" in err
    assert "'digits' fits it" in err


@pytest.mark.parametrize("preset", ["auto", "digits"])
def test_check_is_quiet_when_the_preset_fits(tmp_path, monkeypatch, capsys, preset) -> None:
    code, _, err = check_with_preset(tmp_path, monkeypatch, capsys, preset)
    assert code == 0 and "warning" not in err
