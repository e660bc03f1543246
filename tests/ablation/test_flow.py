"""The nas-ablation flow: its own DVC pipeline (never started by `dvc repro`
of the main chain), its command line, presets and closing summary."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flows import ablation
from nas_core.config import AblationConfig, ParamsError, load_params

REPO = Path(__file__).resolve().parents[2]


def test_study_is_its_own_pipeline_run_after_subset():
    main = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    study = yaml.safe_load((REPO / "ablation" / "dvc.yaml").read_text())["stages"]
    assert not any(name.startswith("ablation") for name in main)  # `dvc repro` of the main chain skips it
    assert all(stage["wdir"] == ".." and "$DVC_ROOT/.venv/bin" in stage["cmd"] for stage in study.values())
    assert ablation.study_order(REPO) == ["subset", "ablation/dvc.yaml:ablation_train",
                                          "ablation/dvc.yaml:ablation_grid"]


def test_command_line_repeats_and_overrides(monkeypatch):
    seen = {}

    def fake_flow(root, params_file, overrides):
        seen.update(params_file=params_file, overrides=overrides)
        return {"stages": {"ablation_grid": "ran"}, "parent_run_id": "r1", "table": "| table |", "metrics": {}}

    monkeypatch.setattr(ablation, "nas_ablation", fake_flow)
    assert ablation.main(["--", "--params", "p.yaml", "--repeats", "3", "--set", "ablation.k_list=[1,3]"]) == 0
    assert seen == {"params_file": "p.yaml", "overrides": {"ablation.k_list": [1, 3], "ablation.repeats": 3}}
    with pytest.raises(ParamsError, match="KEY=VALUE"):
        ablation.main(["--set", "ablation.k_list"])


def test_presets_fill_what_is_not_set_and_bad_values_are_named():
    paper, smoke = AblationConfig(), AblationConfig(preset="smoke", num_archs=8)
    assert (paper.subset_fraction, paper.full_epochs, max(paper.eta_list)) == (0.1, 30, 4)
    assert (smoke.subset_fraction, smoke.full_epochs, smoke.num_archs) == (0.5, 10, 8)
    assert load_params(REPO / "params.yaml").ablation.preset == "paper"
    with pytest.raises(ParamsError, match="ablation.preset = 'fast': allowed: paper, smoke"):
        load_params(REPO / "params.yaml", {"ablation.preset": "fast"})
    with pytest.raises(ParamsError, match="ablation.repeats"):
        load_params(REPO / "params.yaml", {"ablation.repeats": 0})


def test_summary_names_the_three_rules():
    result = {"stages": {"subset": "cached", "ablation_train": "ran", "ablation_grid": "ran"},
              "parent_run_id": "abc",
              "metrics": {"global_es.test_acc": 0.97, "dcnas.test_acc": 0.98, "rs.test_acc": 0.975,
                          "tau_global": 0.41, "replicates": 3}}
    text = "\n".join(ablation.summary_lines(result))
    assert "global early stopping (K=1) 0.9700" in text and "DC-NAS 0.9800" in text and "3 replicate(s)" in text
    assert "random search 0.9750" in text and "Kendall tau" in text and "ablation_train (ran)" in text
