"""The nas-ablation flow's command line and its closing summary."""
from __future__ import annotations

import pytest

from flows import ablation
from nas_core.config import ParamsError


def test_command_line_accepts_overrides_after_a_separator(monkeypatch):
    seen = {}

    def fake_flow(root, params_file, overrides):
        seen.update(params_file=params_file, overrides=overrides)
        return {"stages": {"ablation_grid": "ran"}, "parent_run_id": "r1", "table": "| table |", "metrics": {}}

    monkeypatch.setattr(ablation, "nas_ablation", fake_flow)
    assert ablation.main(["--", "--params", "p.yaml", "--set", "ablation.k_list=[1,3]"]) == 0
    assert seen == {"params_file": "p.yaml", "overrides": {"ablation.k_list": [1, 3]}}
    with pytest.raises(ParamsError, match="KEY=VALUE"):
        ablation.main(["--set", "ablation.k_list"])


def test_summary_names_the_three_rules():
    result = {"stages": {"subset": "cached", "ablation_train": "ran", "ablation_grid": "ran"},
              "parent_run_id": "abc",
              "metrics": {"global_es.test_acc": 0.97, "dcnas.test_acc": 0.98, "rs.test_acc": 0.975,
                          "tau_global": 0.41}}
    text = "\n".join(ablation.summary_lines(result))
    assert "global early stopping (K=1) 0.9700" in text and "DC-NAS 0.9800" in text
    assert "random search 0.9750" in text and "Kendall tau" in text and "ablation_train (ran)" in text
