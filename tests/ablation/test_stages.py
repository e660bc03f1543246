"""The ablation stages end to end on digits with a tiny grid: outputs,
printed table, metrics, and a rerun that reuses every finished network."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

SPACE = {"base_widths": [4, 4, 8, 8, 8, 8]}
TINY = {"num_archs": 8, "epochs": 3, "eta_list": [2, 3], "k_list": [1, 2],
        "full_epochs": 1, "rs_fraction": 0.25, "rs_repeats": 3, "ground_truth": True, "batch_size": 64}


def tiny_project(root: Path) -> Path:
    """dvc.yaml with the ablation stages, reduced params, digits data."""
    root.mkdir(parents=True)
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    for name, stage in yaml.safe_load((HERE / "ablation_stages.yaml").read_text()).items():
        dvc["stages"].setdefault(name, stage)
    (root / "dvc.yaml").write_text(yaml.safe_dump(dvc, sort_keys=False))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["tracking"] = {"uri": f"sqlite:///{root}/mlflow.db", "experiment": "ablation-test"}
    params["runtime"].update({"max_workers": 1, "device": "cpu"})
    params["subset"].update({"fraction": 0.3, "probe_size": 64})
    params["ablation"] = TINY
    params.setdefault("spaces", {})["channel_ratio"] = SPACE
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(REPO / "data", root / "data")
    return root


@pytest.mark.slow
def test_ablation_stages_end_to_end_and_resume(tmp_path, capsys):
    from tasks.runner import run_stage

    root = tiny_project(tmp_path / "project")
    run_stage("subset", root=root)
    first = run_stage("ablation_train", root=root)
    assert first["trained_now"] == 8 and first["reused"] == 0
    features = np.load(root / "artifacts/ablation_train/features_output.npy")
    assert features.shape == (8, 6, 3) and np.allclose(features[:, :, 0], 1.0)

    grid = run_stage("ablation_grid", root=root)
    printed = capsys.readouterr().out
    assert "| Top-1 acc(%) (RS) |" in printed and "| Top-1 acc(%) (η = 3) |" in printed
    assert "Kendall τ" in printed and "Table 2 layout" in printed
    assert grid["full_trained"] == 8  # ground truth: every sampled network, once
    table = (root / "artifacts/ablation_grid/table1.csv").read_text()
    assert table.count("dcnas") == 4 and table.count("random") == 2
    assert (root / "metrics/ablation_heatmap.png").stat().st_size > 0
    assert json.loads((root / "metrics/ablation_grid.json").read_text()) == pytest.approx(grid)

    # A run killed after some architectures: the rerun trains only the missing ones.
    for record in sorted((root / "artifacts/ablation_train/archs").glob("*.json"))[:3]:
        record.unlink()
    again = run_stage("ablation_train", root=root)
    assert again["trained_now"] == 3 and again["reused"] == 5
    assert np.array_equal(np.load(root / "artifacts/ablation_train/features_output.npy"), features)
    regrid = run_stage("ablation_grid", root=root)
    assert regrid == pytest.approx(grid)
