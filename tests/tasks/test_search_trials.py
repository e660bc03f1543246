"""The search stage running a multi-trial strategy on a tiny digits project:
its trial table and figures, a SIGKILL mid-search then a rerun ending with
the uninterrupted run's table, the same table on the thread pool and on a
real Dask LocalCluster, and the weight-sharing evaluator on a pretrained
supernet."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import tasks.stages.pretrain
import tasks.stages.search
from flows.fanout import fan_out
from nas_core.evaluators import EvalData, create_evaluator
from nas_core.evaluators.supernet import path_forward
from tasks.nas import restored
from tests.conftest import REPO
from tests.tasks.stage_project import make_project, run_stage, stage_context, tiny_params

RANDOM = {"search": {"strategy": "random", "space": "channel_ratio"},
          "strategies": {"random": {"trials": 8, "batch": 2, "budget": 1}}}


def rows(root):
    """The trial table without its wall-clock columns."""
    lines = (root / "artifacts" / "search" / "trials.jsonl").read_text().splitlines()[1:]
    return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "elapsed_s")} for line in lines]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    params = tiny_params(**RANDOM)
    root = make_project(tmp_path_factory.mktemp("whole") / "project", params)
    metrics, _ = run_stage(root, params, tasks.stages.search, "search")
    return root, params, metrics


def test_search_stage_writes_the_trial_table_best_genotype_and_plots(uninterrupted):
    root, params, metrics = uninterrupted
    out = root / "artifacts" / "search"
    table = rows(root)
    assert [r["index"] for r in table] == list(range(8)) and metrics["trials"] == 8
    best = max(table, key=lambda r: (r["metrics"]["score"], -r["index"]))
    assert json.loads((out / "genotype.json").read_text()) == best["genotype"]
    assert metrics["best_score"] == best["metrics"]["score"]
    for name in ("best_so_far.png", "pareto.png", "genotype.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    header = (out / "trials.csv").read_text().splitlines()[0].split(",")
    assert {"trial", "label", "score", "flops", "params", "best_score", "pareto"} <= set(header)


KILLED_RUN = textwrap.dedent("""
    import sys
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    import tasks.stages.search
    from tests.tasks.stage_project import run_stage, tiny_params
    params = tiny_params(**{settings!r})
    run_stage(Path({root!r}), params, tasks.stages.search, "search")
""")


@pytest.mark.slow
def test_sigkill_mid_search_then_rerun_ends_with_the_uninterrupted_table(uninterrupted, tmp_path):
    params = tiny_params(**RANDOM)
    root = make_project(tmp_path / "project", params)
    table = root / "artifacts" / "search" / "trials.jsonl"
    script = KILLED_RUN.format(repo=str(REPO), settings=RANDOM, root=str(root))
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not (table.is_file() and len(table.read_text().splitlines()) > 1) and proc.poll() is None:
        assert time.monotonic() < deadline, "no round was recorded"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(rows(root))
    assert 2 <= done_before < 8, "the kill should land mid-search"
    metrics, _ = run_stage(root, params, tasks.stages.search, "search")
    assert rows(root) == rows(uninterrupted[0])
    assert metrics["best_score"] == uninterrupted[2]["best_score"]


@pytest.mark.slow
def test_thread_pool_and_dask_local_cluster_give_the_same_trial_table(tmp_path, prefect_server, monkeypatch):
    monkeypatch.setenv("DASK_DISTRIBUTED__WORKER__DAEMON", "False")
    tables = []
    settings = {**RANDOM, "strategies": {"random": {"trials": 6, "batch": 2, "budget": 1}}}
    for runner in ({"task_runner": "thread", "max_workers": 2}, {"task_runner": "dask", "dask_n_workers": 2}):
        params = tiny_params(**settings, runtime=runner)
        root = make_project(tmp_path / runner["task_runner"] / "project", params)
        ctx = stage_context(root, params, "search")
        ctx.fan_out = fan_out
        tasks.stages.search.run(params, ctx)
        ctx.log.end("FINISHED")
        tables.append(rows(root))
    assert tables[0] == tables[1] and len(tables[0]) == 6


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A tiny FBNet supernet pretrained for a random search on layerwise
    with the weight-sharing evaluator."""
    params = tiny_params(search={"strategy": "random", "space": "layerwise"},
                         strategies={"random": {"evaluator": "supernet", "trials": 4, "budget": None}})
    root = make_project(tmp_path_factory.mktemp("shared") / "project", params)
    run_stage(root, params, tasks.stages.pretrain, "pretrain")
    return root, params


def test_supernet_evaluator_scores_a_path_with_the_pretrained_weights(pretrained):
    root, params = pretrained
    ctx = stage_context(root, params, "search")
    space, trainer = restored(params, ctx)
    assert trainer.name == "fbnet"
    supernet = trainer.supernet.eval()
    genotype = space.random(__import__("numpy").random.default_rng(0))
    x = ctx.splits()["val"][0][0][None]
    row = space.encode(genotype)
    with torch.no_grad():
        assert torch.allclose(path_forward(supernet, x, row), supernet.forward_path(x, row.tolist()))
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    evaluator = create_evaluator("supernet", space, params.evaluators.supernet)
    data = EvalData(ctx.splits()["subset"], ctx.splits()["val"], "digits")
    first = evaluator.evaluate(genotype, data, seed=3, supernet=supernet)
    assert 0.0 <= first["score"] <= 1.0 and first == evaluator.evaluate(genotype, data, seed=3, supernet=supernet)
    assert all(torch.equal(before[k], v) for k, v in supernet.state_dict().items())  # BN statistics restored
    ctx.log.end("FINISHED")


def test_random_search_with_the_supernet_evaluator_through_the_stage(pretrained):
    root, params = pretrained
    metrics, _ = run_stage(root, params, tasks.stages.search, "search")
    assert metrics["trials"] == 4 and 0.0 <= metrics["best_score"] <= 1.0
    tables = dict(json.loads((root / "artifacts" / "search" / "summary.json").read_text()))
    assert tables["strategy"] == "random" and tables["space"] == "layerwise"


@pytest.mark.slow
def test_dcnas_runs_on_a_multi_trial_search_and_scores_clusters_with_a_proxy(pretrained):
    """After a random search with a pretrained supernet, the DC-NAS stages run
    on that supernet, the evaluate stage scores each cluster's candidates
    with the zero-cost evaluator, and retrain trains the picks and the
    search's best trial."""
    import tasks.stages.dcnas_cluster
    import tasks.stages.dcnas_features
    import tasks.stages.dcnas_sample
    import tasks.stages.evaluate
    import tasks.stages.retrain
    from nas_core.config import validate_params

    root, params = pretrained
    raw = params.model_dump(mode="json")
    raw["evaluate"]["evaluator"] = "zero_cost"
    raw["retrain"]["random_control"] = True
    params = validate_params(raw)
    run_stage(root, params, tasks.stages.search, "search")
    for name, module in (("dcnas_sample", tasks.stages.dcnas_sample), ("dcnas_features", tasks.stages.dcnas_features),
                         ("dcnas_cluster", tasks.stages.dcnas_cluster), ("evaluate", tasks.stages.evaluate)):
        metrics, _ = run_stage(root, params, module, name)
    picks = json.loads((root / "artifacts" / "evaluate" / "representatives.json").read_text())
    assert picks["evaluator"] == "zero_cost"
    assert all("proxy_naswot" in c and c["score"] == c["proxy_naswot"] for p in picks["clusters"]
               for c in p["candidates"])
    metrics, _ = run_stage(root, params, tasks.stages.retrain, "retrain")
    best = json.loads((root / "artifacts" / "search" / "genotype.json").read_text())
    chosen = json.loads((root / "artifacts" / "retrain" / "chosen.json").read_text())
    assert chosen["baseline"]["label"] == make_label(params, best)
    # the random control at equal compute: a proxy costs no training, so K full trainings
    k = len(picks["clusters"])
    assert chosen["random_control"]["networks"] == k == metrics["random_networks"]
    assert metrics["test_acc_vs_random"] == pytest.approx(chosen["test_acc"] - chosen["random_control"]["test_acc"])


def make_label(params, genotype):
    from nas_core.spaces import make_space

    space = make_space("layerwise", params.spaces.layerwise, (1, 8, 8), 10)
    return space.label(space.genotype_from_dict(genotype))
