"""`torchrun --nproc_per_node 2` on the CPU (gloo): θ is identical on both
ranks after every epoch, and the result is within tolerance of the same
run in one process (compared without BatchNorm: on the CPU each rank
normalises with its own batch statistics; see ddp_fbnet.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from service_procs import free_port
from tests.conftest import REPO, sh

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).with_name("ddp_fbnet.py")
BIN = Path(sys.executable).parent


def run(cmd: list[str], out: Path, *flags: str) -> dict:
    proc = sh(*cmd, str(out), *flags, cwd=REPO, check=False, env={"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return torch.load(out, weights_only=True)


def torchrun() -> list[str]:
    return [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            "--master_port", str(free_port()), str(SCRIPT)]


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
    params["pretrain"].update(epochs=2, warmup_epochs=1, batch_size=32, latency_repeats=1)
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
