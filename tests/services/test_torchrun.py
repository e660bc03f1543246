"""`torchrun --nproc_per_node 2` on the CPU (gloo): FBNet pre-training and
the cell strategies keep θ / α identical on both ranks after every epoch,
and child-network training (evaluate / retrain) ends with the same weights
on both ranks; each is within tolerance of the same run in one process
(compared without BatchNorm, and without P-DARTS's skip dropout: on the CPU
each rank normalises with its own batch statistics and draws masks for its share;
see ddp_fbnet.py, ddp_cell.py and ddp_fit.py). The stages run under
`torchrun -m flows.distributed` with outputs and one MLflow run from rank 0."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from service_procs import free_port

from tests.conftest import REPO, sh

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).with_name("ddp_fbnet.py")
FIT_SCRIPT = Path(__file__).with_name("ddp_fit.py")
CELL_SCRIPT = Path(__file__).with_name("ddp_cell.py")
BIN = Path(sys.executable).parent


def run(cmd: list[str], out: Path, *flags: str) -> dict:
    proc = sh(*cmd, str(out), *flags, cwd=REPO, check=False, env={"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return torch.load(out, weights_only=True)


def torchrun(*target: str) -> list[str]:
    return [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            "--master_port", str(free_port()), *(target or (str(SCRIPT),))]


def test_two_processes_keep_theta_identical_and_match_one_process(tmp_path):
    single = run([sys.executable, str(SCRIPT)], tmp_path / "single.pt", "--no-batchnorm")
    multi = run(torchrun(), tmp_path / "ddp.pt", "--no-batchnorm")
    assert single["world"] == 1 and single["class"] == "FBNetStrategy"
    assert multi["world"] == 2 and multi["class"] == "DistributedFBNet"
    assert multi["same"] == [True, True]  # θ identical on both ranks after each epoch
    moved = float(single["theta"].abs().max())
    assert moved > 0  # θ was trained in the second epoch
    assert torch.allclose(multi["theta"], single["theta"], atol=0.05 * moved)
    for a, b in zip(single["history"], multi["history"]):
        assert b["expected_latency_ms"] == pytest.approx(a["expected_latency_ms"], rel=1e-3)
        assert b["loss"] == pytest.approx(a["loss"], rel=0.05)  # rank 0 reports its half of the samples


def test_stage_entry_writes_outputs_and_one_run_from_rank_0(template_project, tmp_path):
    from mlflow.tracking import MlflowClient
    from service_procs import copy_project

    project = copy_project(template_project, tmp_path / "project")
    cmd = [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "flows.distributed", "subset"]
    proc = sh(*cmd, cwd=project, check=False, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (project / "artifacts" / "subset").is_dir() and (project / "metrics" / "subset.json").is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{project}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.data.tags["nasflow.stage"] for r in runs] == ["subset"]  # rank 1 logged nothing


def test_pretrain_stage_under_torchrun_checkpoints_from_rank_0(template_project, tmp_path):
    import yaml
    from mlflow.tracking import MlflowClient
    from service_procs import copy_project

    project = copy_project(template_project, tmp_path / "project")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["runtime"].update(device="cpu", threads=1)
    params["strategies"]["fbnet"].update(epochs=2, warmup_epochs=1, batch_size=32)
    params["spaces"]["layerwise"]["latency_repeats"] = 1
    (project / "params.tiny.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("nasflow", "stage", "subset", "--params", "params.tiny.yaml", cwd=project)
    cmd = [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "flows.distributed", "pretrain", "--params", "params.tiny.yaml"]
    proc = sh(*cmd, cwd=project, check=False, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checkpoints = sorted(p.name for p in (project / "artifacts" / "pretrain" / "checkpoints").glob("*.pt"))
    assert checkpoints == ["epoch_001.pt", "epoch_002.pt"]
    client = MlflowClient(tracking_uri=f"sqlite:///{project}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              "tags.`nasflow.stage` = 'pretrain'")
    assert len(runs) == 1 and runs[0].data.metrics["epochs"] == 2  # rank 1 logged nothing


@pytest.mark.parametrize("strategy, order", [("darts", "2"), ("pc_darts", "1"), ("p_darts", "1"), ("gdas", "1")])
def test_cell_search_in_two_processes_matches_one_process(tmp_path, strategy, order):
    flags = (strategy, "--order", order, "--exact")
    single = run([sys.executable, str(CELL_SCRIPT)], tmp_path / "single.pt", *flags)
    multi = run(torchrun(str(CELL_SCRIPT)), tmp_path / "ddp.pt", *flags)
    assert multi["world"] == 2 and multi["class"].startswith("DataParallel")
    assert all(multi["same"]) and len(multi["same"]) == len(single["history"])  # α identical after each epoch
    first, last = single["alpha_per_epoch"][-2:]  # the last two epochs (one P-DARTS stage)
    assert not torch.allclose(first, last, rtol=0, atol=1e-5)  # α was trained: the comparison is not trivial
    for name, alpha in single["arch"].items():
        assert torch.allclose(multi["arch"][name], alpha, rtol=1e-4, atol=1e-7), name
    for a, b in zip(single["history"], multi["history"], strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5) and b["val_acc"] == a["val_acc"]


def test_cell_search_with_batchnorm_and_dropout_keeps_alpha_identical_across_ranks(tmp_path):
    multi = run(torchrun(str(CELL_SCRIPT)), tmp_path / "ddp.pt", "p_darts")
    assert multi["same"] == [True] * 4  # two P-DARTS stages of two epochs


def test_child_training_in_two_processes_matches_one_process(tmp_path):
    single = run([sys.executable, str(FIT_SCRIPT)], tmp_path / "single.pt", "--no-batchnorm")
    multi = run(torchrun(str(FIT_SCRIPT)), tmp_path / "ddp.pt", "--no-batchnorm")
    assert single["world"] == 1 and multi["world"] == 2
    assert multi["same"]  # weights and reported numbers identical on both ranks
    for name, value in single["state"].items():
        assert torch.allclose(multi["state"][name], value, atol=1e-5), name
    for a, b in zip(single["history"], multi["history"], strict=True):
        assert b == pytest.approx(a, rel=1e-5)  # also the second epoch: the shuffles stay in step
    assert multi["test_acc"] == single["test_acc"]


def test_child_training_with_batchnorm_stays_identical_across_ranks(tmp_path):
    single = run([sys.executable, str(FIT_SCRIPT)], tmp_path / "single.pt")
    multi = run(torchrun(str(FIT_SCRIPT)), tmp_path / "ddp.pt")
    assert multi["same"]  # BatchNorm statistics are rank 0's on every rank
    assert multi["history"][-1]["val_loss"] == pytest.approx(single["history"][-1]["val_loss"], rel=0.05)


def finalist_genotypes(project: Path, count: int) -> list[dict]:
    from nas_core.config import load_params
    from nas_core.data import load_source
    from nas_core.spaces import make_space

    params = load_params(project / "params.tiny.yaml")
    source = load_source(params.data, project)
    space = make_space("layerwise", params.spaces.layerwise, source.input_shape, source.num_classes)
    return [{"space": space.name, "preset": space.preset,
             "ops": [space.op_names[(i + j) % space.num_ops] for j in range(space.num_layers)]}
            for i in range(count)]


def stage_inputs(project: Path) -> None:
    """What evaluate and retrain read from earlier stages: the subset's
    splits (run for real), two clusters of two candidates (dcnas_cluster)
    and the search genotype."""
    from nas_core.io import write_json

    sh("nasflow", "stage", "subset", "--params", "params.tiny.yaml", cwd=project)
    genotypes = finalist_genotypes(project, 5)
    candidates = [{"index": i, "label": " | ".join(g["ops"]), "eq9": 1.0 - i % 2, "genotype": g}
                  for i, g in enumerate(genotypes[:4])]
    clusters = [{"cluster": c, "size": 10, "candidates": candidates[2 * c:2 * c + 2]} for c in range(2)]
    write_json(project / "artifacts" / "dcnas_cluster" / "representatives.json", {"clusters": clusters})
    write_json(project / "artifacts" / "search" / "genotype.json", genotypes[4])


# The pretrain stage is one path for every one-shot strategy: under torchrun it
# is tested with FBNet above; the cell strategies' data-parallel variants are
# compared with one process in test_cell_search_in_two_processes_matches_one_process.


def run_under_torchrun(project: Path, stage: str) -> None:
    cmd = torchrun("-m", "flows.distributed", stage, "--params", "params.tiny.yaml")
    proc = sh(*cmd, cwd=project, check=False, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_evaluate_and_retrain_under_torchrun_train_each_network_once_from_rank_0(template_project, tmp_path):
    import csv
    import json

    import yaml
    from mlflow.tracking import MlflowClient
    from service_procs import copy_project

    project = copy_project(template_project, tmp_path / "project")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["runtime"].update(device="cpu", threads=1, max_workers=2)
    params["evaluate"].update(epochs=1)
    params["evaluators"]["train"].update(batch_size=32)
    params["retrain"].update(epochs=2, batch_size=32, random_control=False)
    (project / "params.tiny.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stage_inputs(project)
    run_under_torchrun(project, "evaluate")
    picks = json.loads((project / "artifacts" / "evaluate" / "representatives.json").read_text())["clusters"]
    assert [len(p["candidates"]) for p in picks] == [2, 2]
    assert all(0 <= c["val_acc"] <= 1 for p in picks for c in p["candidates"])
    run_under_torchrun(project, "retrain")

    out = project / "artifacts" / "retrain"
    with open(out / "finalists.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["cluster0", "cluster1", "baseline"]
    chosen = json.loads((out / "chosen.json").read_text())
    assert chosen["name"] in ("cluster0", "cluster1") and (out / "model" / "state_dict.pt").is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{project}/mlflow.db")
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert len(client.search_runs(experiments, "tags.`nasflow.stage` = 'evaluate'")) == 1
    stage = client.search_runs(experiments, "tags.`nasflow.stage` = 'retrain'")
    assert len(stage) == 1 and stage[0].data.metrics["chosen_test_acc"] == float(chosen["test_acc"])
    nested = client.search_runs(experiments, f"tags.mlflow.parentRunId = '{stage[0].info.run_id}'")
    assert sorted(r.data.tags["nasflow.finalist"] for r in nested) == ["baseline", "cluster0", "cluster1"]
    assert all(len(client.get_metric_history(r.info.run_id, "train_loss")) == 2 for r in nested)  # epochs
    versions = client.search_model_versions(f"name = '{params['tracking']['registered_model']}'")
    assert len(versions) == 1  # rank 1 registered nothing
