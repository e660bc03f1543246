"""Eq. 7 features that fan out and batch (issue 17, item 3): the trie cut
into partitions gives exactly the features of one extraction (in this
process, on the thread pool and on a 2-worker Dask LocalCluster through the
stage's own job function), and the batched walk gives exactly the per-node
trie's features on the layer-wise, cell and DSO supernets; each partition
reports every checkpoint epoch in the stage log."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from nas_core.dcnas.features import (
    MIN_BATCHED_CHUNK,
    BatchLimits,
    assemble_partitions,
    build_trie,
    extract_output_features,
    loaded_epochs,
    node_starts,
    partition_rows,
    path_prefixes,
    plan_batched_walk,
    supernet_trie,
)
from tasks.live import LiveRun
from tests.conftest import fd2_to
from tests.dcnas.conftest import keyed_states
from tests.dcnas.test_features_supernets import digits_probe

CPU = torch.device("cpu")
# probe chunks of 16 and 4 images: a batched walk for the first, per node for the second
PROBE = (20, MIN_BATCHED_CHUNK)


def peaked_archs(space, count: int, seed: int = 0) -> np.ndarray:
    """Sampled rows sharing many prefixes (softmax of N(0, 1.5²) logits)."""
    logits = np.random.default_rng(seed).normal(0.0, 1.5, size=(space.num_layers, space.num_ops))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return space.sample({"layers": probs}, count, seed=seed).archs


@pytest.fixture(scope="module")
def layerwise():
    from nas_core.spaces import make_space
    from nas_core.supernet.layerwise import LayerwiseSupernet

    space = make_space("layerwise", {"preset": "digits"}, (1, 8, 8), 10)
    torch.manual_seed(0)
    net = LayerwiseSupernet(space)
    states = keyed_states(net, 2)
    rows = peaked_archs(space, 120)
    per_node = extract_output_features(loaded_epochs(net, states), rows, digits_probe(*PROBE), CPU)
    return net, states, rows, per_node


@pytest.mark.parametrize("limits", [BatchLimits(), BatchLimits(block_leaves=7, call_nodes=3)],
                         ids=["one-block", "small-blocks"])
def test_batched_walk_equals_per_node_trie_on_the_layerwise_supernet(layerwise, limits):
    net, states, rows, per_node = layerwise
    batched = extract_output_features(loaded_epochs(net, states), rows, digits_probe(*PROBE), CPU,
                                      method="batched", limits=limits)
    assert np.array_equal(batched, per_node)
    trie = supernet_trie(net, rows)
    calls = plan_batched_walk(net, trie, limits).calls
    assert calls < trie.total_nodes
    unbounded = plan_batched_walk(net, trie, BatchLimits(call_nodes=10**6)).calls
    assert unbounded == sum(len(np.unique(trie.rows[:, d])) for d in range(trie.depth))  # one call per op and depth


CELL_SUPERNETS = {"cell": ("darts", None, {"epochs": 1, "init_channels": 4, "cells": 5}),
                  "global_cell": ("dnas_cam", {"cells": 3, "final_channels": 8, "auxiliary_weight": 0.0},
                                  {"epochs": 1, "init_channels": 4})}


@pytest.mark.parametrize("space_name", sorted(CELL_SUPERNETS))
def test_batched_walk_equals_per_node_trie_on_the_cell_supernets(space_name):
    from nas_core.spaces import make_space
    from nas_core.spaces.cell.sampling import HALF_WIDTH
    from nas_core.strategies import create_strategy

    strategy_name, space_params, config = CELL_SUPERNETS[space_name]
    space = make_space(space_name, space_params, (1, 8, 8), 10)
    strategy = create_strategy(strategy_name, space, config, CPU)
    strategy.setup(None)
    net = strategy.supernet
    states = keyed_states(net, 2)
    sampled = space.sample(space.uniform_tables(), 8, seed=0).archs
    # the first cell's 16 entries from one of 3 rows, the rest from another: deeper cells repeat across prefixes
    rows = np.array([np.r_[n[:HALF_WIDTH], r[HALF_WIDTH:]] for n in sampled[:3] for r in sampled[3:6]])
    probe = digits_probe(24, MIN_BATCHED_CHUNK)
    per_node = extract_output_features(loaded_epochs(net, states), rows, probe, CPU)
    batched = extract_output_features(loaded_epochs(net, states), rows, probe, CPU, method="batched")
    assert np.array_equal(batched, per_node)
    trie = supernet_trie(net, rows)
    assert plan_batched_walk(net, trie).calls < trie.total_nodes  # a later cell of 3 first cells in one call


@pytest.mark.parametrize("scope", ["share", "full"])
def test_batched_walk_equals_per_node_trie_on_the_dso_supernet(scope):
    """Batched equals per-node on the DSO supernet, whose key is a block's
    used connections (every row runs the same reduction block, so each
    reduction depth is one call)."""
    from nas_core.spaces import make_space
    from nas_core.supernet.dso import DSOSupernet

    space = make_space("dso", {"levels": 2, "stages": 2, "blocks_per_stage": 1, "init_channels": 4,
                               "scope": scope}, (1, 8, 8), 10)
    torch.manual_seed(0)
    net = DSOSupernet(space)
    states = keyed_states(net, 2)
    sampled = np.random.default_rng(0).integers(0, 2, size=(4, space.encoding_length))
    if scope == "full":  # block 2 from one of 2 rows, block 1 from another: prefixes and keys repeat
        half = space.encoding_length // 2
        sampled = np.array([np.r_[a[:half], b[half:]] for a in sampled[:2] for b in sampled[2:]])
    rows = np.unique(np.r_[sampled, np.ones((1, space.encoding_length), dtype=sampled.dtype)], axis=0)
    probe = digits_probe(24, MIN_BATCHED_CHUNK)
    per_node = extract_output_features(loaded_epochs(net, states), rows, probe, CPU)
    batched = extract_output_features(loaded_epochs(net, states), rows, probe, CPU, method="batched")
    assert np.array_equal(batched, per_node)
    trie = supernet_trie(net, rows)
    assert plan_batched_walk(net, trie).calls < trie.total_nodes  # the reduction block: one call per depth


def test_batched_walk_refuses_probe_batch_statistics(layerwise):
    net, states, rows, _ = layerwise
    with pytest.raises(ValueError, match="method = 'batched' needs bn = 'running'"):
        extract_output_features(loaded_epochs(net, states), rows[:3], digits_probe(16, 16), CPU, "batch", "batched")


def test_partitions_are_balanced_ranges_of_whole_subtrees(layerwise):
    net, _, rows, _ = layerwise
    trie = supernet_trie(net, rows)
    ranges = partition_rows(trie, 3)
    assert len(ranges) == 3 and ranges[0][0] == 0 and ranges[-1][1] == len(trie.rows)
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    starts = node_starts(trie)
    nodes = [int(starts[lo:hi].sum()) for lo, hi in ranges]
    assert max(nodes) - min(nodes) <= 0.25 * trie.total_nodes / 3
    assert all(starts[lo, 1] for lo, _ in ranges[1:])  # cut where a first- or second-level node starts
    assert partition_rows(build_trie(rows[:1], path_prefixes(net)), 4) == [(0, 1)]
    with pytest.raises(ValueError, match="partitions = 0"):
        partition_rows(trie, 0)


@pytest.mark.parametrize("parts", [2, 5])
def test_partitions_extracted_alone_equal_one_extraction(layerwise, parts):
    net, states, rows, per_node = layerwise
    trie = supernet_trie(net, rows)
    ranges = partition_rows(trie, parts)
    results = [extract_output_features(loaded_epochs(net, states), trie.rows[lo:hi], digits_probe(*PROBE), CPU,
                                       method="batched") for lo, hi in ranges]
    assert np.array_equal(assemble_partitions(trie, ranges, results), per_node)


# ---------------------------------------------------------------- the stage's job on real task runners

@pytest.fixture(scope="module")
def stage_jobs(tmp_path_factory):
    """A digits project (probe of 20 images), FBNet checkpoints of 3
    epochs on disk, the stage's partition jobs for 120-odd sampled rows and
    the single-process features they must reproduce."""
    from nas_core.spaces import make_space
    from nas_core.spaces.layerwise import flops_latency_table
    from nas_core.strategies import SupernetSpec, create_strategy
    from nas_core.train.checkpoint import load_checkpoint, save_checkpoint
    from nas_core.train.loop import make_loader
    from tasks.stages.dcnas_features import CheckpointSet, FeatureJob, ProbeSet
    from tests.tasks.stage_project import make_project, tiny_params

    params = tiny_params(subset={"probe_size": PROBE[0]})
    root = make_project(tmp_path_factory.mktemp("features"), params)
    space = make_space("layerwise", params.spaces.layerwise, (1, 8, 8), 10)
    space = space.with_latency(flops_latency_table(space))
    config = params.strategies.fbnet.model_dump(mode="json")
    strategy = create_strategy("fbnet", space, config, CPU, 0)
    strategy.setup(None)
    paths = []
    for epoch, state in enumerate(keyed_states(strategy.supernet, 3), start=1):
        strategy.supernet.load_state_dict(state)
        paths.append(str(save_checkpoint(root / "checkpoints", epoch, strategy.state_dict())))
    rows = peaked_archs(space, 150, seed=1)
    from nas_core.data.subset import load_splits

    probe_split = load_splits(params.data, root, root / "artifacts" / "subset")[1]["probe"]
    single = extract_output_features((strategy.load_supernet(load_checkpoint(p)) for p in paths), rows,
                                     make_loader(probe_split, PROBE[1], shuffle=False), CPU)
    trie = supernet_trie(strategy.supernet, rows)
    ranges = partition_rows(trie, 2)
    spec = CheckpointSet(SupernetSpec("fbnet", config, paths[-1], 0), space, tuple(paths))
    probe = ProbeSet(params.data, str(root), str(root / "artifacts" / "subset"), PROBE[1])
    jobs = [FeatureJob(trie.rows[lo:hi], spec, probe, "running", "batched", BatchLimits(),
                       live=LiveRun(None, None, f"features-part{i:03d}", len(paths), stage="dcnas_features"))
            for i, (lo, hi) in enumerate(ranges)]
    return trie, ranges, jobs, single


def fanned_out(stage_jobs, runtime):
    from flows.fanout import fan_out
    from tasks.stages.dcnas_features import extract_partition

    trie, ranges, jobs, _ = stage_jobs
    results = fan_out(extract_partition, jobs, runtime, flow_name="test-features")
    return assemble_partitions(trie, ranges, [r["features"] for r in results])


def test_stage_partitions_on_the_thread_pool_equal_one_process(stage_jobs, prefect_server):
    from nas_core.config import RuntimeConfig

    features = fanned_out(stage_jobs, RuntimeConfig(task_runner="thread", max_workers=2))
    assert features.shape == (len(stage_jobs[0].rows), 6, 3)
    assert np.array_equal(features, stage_jobs[3])


def progress_lines(err: str, part: str) -> list[int]:
    return [int(m) for m in re.findall(rf"\[dcnas_features\] {part}: epoch (\d)/3 archs_per_s \d", err)]


def test_a_partition_reports_each_checkpoint_epoch(stage_jobs, capsys):
    from tasks.stages.dcnas_features import extract_partition

    extract_partition(stage_jobs[2][0])
    assert progress_lines(capsys.readouterr().err, "features-part000") == [1, 2, 3]


@pytest.mark.slow
def test_stage_partitions_on_a_dask_local_cluster_equal_one_process(stage_jobs, prefect_server, monkeypatch,
                                                                     tmp_path):
    from nas_core.config import RuntimeConfig

    monkeypatch.setenv("DASK_DISTRIBUTED__WORKER__DAEMON", "False")
    with fd2_to(tmp_path / "stderr.txt"):  # the stage log, which the workers inherit
        features = fanned_out(stage_jobs, RuntimeConfig(task_runner="dask", dask_n_workers=2))
    assert np.array_equal(features, stage_jobs[3])
    err = (tmp_path / "stderr.txt").read_text()
    assert progress_lines(err, "features-part000") == progress_lines(err, "features-part001") == [1, 2, 3], err
