"""The study's stages end to end on digits with a tiny grid and two
replicates: outputs per replicate, the report, metrics, one nested MLflow
run per replicate, and a rerun that reuses every finished network."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

SPACE = {"base_widths": [4, 4, 8, 8, 8, 8]}
TINY = {"preset": "smoke", "repeats": 2, "num_archs": 5, "subset_fraction": 0.3, "epochs": 3, "eta_list": [2, 3],
        "k_list": [1, 2], "full_epochs": 1, "rs_repeats": 3, "ground_truth": True, "batch_size": 64}


def tiny_project(root: Path) -> Path:
    """The main and the study dvc.yaml, reduced params, digits data."""
    (root / "ablation").mkdir(parents=True)
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    shutil.copy(REPO / "ablation" / "dvc.yaml", root / "ablation" / "dvc.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["tracking"] = {"uri": f"sqlite:///{root}/mlflow.db", "experiment": "ablation-test"}
    params["runtime"].update({"max_workers": 1, "device": "cpu"})
    params["subset"].update({"probe_size": 64})
    params["ablation"] = TINY
    params.setdefault("spaces", {})["channel_ratio"] = SPACE
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(REPO / "data", root / "data")
    return root


def replicate_runs(root: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    exp = client.get_experiment_by_name("ablation-test")
    return [r for r in client.search_runs([exp.experiment_id]) if "nasflow.replicate" in r.data.tags]


@pytest.mark.slow
def test_study_stages_end_to_end_and_resume(tmp_path, capsys):
    from tasks.runner import run_stage

    root = tiny_project(tmp_path / "project")
    run_stage("subset", root=root)
    first = run_stage("ablation_train", root=root)
    assert first["replicates"] == 2 and first["trained_now"] == 10 and first["reused"] == 0
    out = root / "artifacts/ablation_train"
    features = [np.load(out / f"r00{r}/features_output.npy") for r in range(2)]
    assert all(f.shape == (5, 6, 3) and np.allclose(f[:, :, 0], 1.0) for f in features)
    infos = [json.loads((out / f"r00{r}/replicate.json").read_text()) for r in range(2)]
    assert infos[0]["seed"] != infos[1]["seed"] and 0.25 < infos[0]["subset_ratio"] < 0.35

    grid = run_stage("ablation_grid", root=root)
    printed = capsys.readouterr().out
    assert "Top-1 acc(%) DC-NAS (η = 3)" in printed and "Wilcoxon" in printed and "Kendall τ" in printed
    assert "Full-training equivalents" in printed and "Table 2 layout" in printed
    assert grid["full_trained"] == 10 and grid["replicates"] == 2  # ground truth: every network, once
    rows = (root / "artifacts/ablation_grid/rows.csv").read_text()
    assert rows.count("dcnas") == 8 and rows.count("random") == 8  # 2 replicates x 2 eta x 2 K
    for name in ("accuracy", "regret", "tau"):
        assert (root / f"metrics/ablation_{name}.png").stat().st_size > 0
    assert json.loads((root / "metrics/ablation_grid.json").read_text()) == pytest.approx(grid)
    assert sorted(r.data.tags["nasflow.replicate"] for r in replicate_runs(root)) == ["0", "1"]

    # Killed after some networks: the rerun trains only the missing ones and ends the same.
    for record in sorted((out / "archs" / "r001").glob("*.json"))[:3]:
        record.unlink()
    again = run_stage("ablation_train", root=root)
    assert again["trained_now"] == 3 and again["reused"] == 7
    assert np.array_equal(np.load(out / "r001/features_output.npy"), features[1])
    assert run_stage("ablation_grid", root=root) == pytest.approx(grid)
