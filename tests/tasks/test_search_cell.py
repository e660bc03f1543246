"""The cell part of the search stage on digits: outputs, resume, export."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from dcnas_project import stage_context, tiny_params

from nas_core.data import load_source, make_splits, write_splits
from nas_core.spaces.cell import CellGenotype
from nas_core.supernet.cell import load_exported
from nas_core.train.checkpoint import list_checkpoints
from nas_core.io import load_npy
from tasks.dcnas_cell import cell_network, run_cell_features, run_cell_sample
from tasks.search_cell import is_cell_strategy, run_cell_search
from tests.conftest import REPO

CELL = {"cells": 3, "init_channels": 4, "epochs": 2, "batch_size": 64, "pc_k": 2, "final_cells": 4,
        "final_channels": 4}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("cellproj")
    (root / "data").symlink_to(REPO / "data")
    params = tiny_params(subset={"fraction": 0.05, "probe_size": 16}, search={"strategy": "pc_darts", "cell": CELL})
    source = load_source(params.data, root)
    splits = make_splits(source.train_targets, source.test_targets, params.data, params.subset, params.runtime.seed)
    write_splits(splits, source, root / "artifacts" / "subset", params.runtime.seed)
    return root, params


@pytest.fixture(scope="module")
def searched(project):
    root, params = project
    torch.set_num_threads(1)
    ctx = stage_context(root, params, "search")
    return root, params, ctx, run_cell_search(params, ctx)


@pytest.mark.slow
def test_cell_search_writes_genotype_pictures_tables_and_network(searched):
    root, params, ctx, metrics = searched
    assert is_cell_strategy("pc_darts") and not is_cell_strategy("fbnet")
    out = ctx.out
    genotype = CellGenotype.from_dict(json.loads((out / "genotype.json").read_text()))
    for name in ("cell_normal.png", "cell_reduce.png", "probabilities.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.reader((out / "probabilities_normal.csv").open()))
    assert rows[0][1:] == json.loads((out / "genotype.json").read_text())["op_names"] and len(rows) == 15
    assert len(list(csv.DictReader((out / "history.csv").open()))) == 2
    assert {"loss", "acc", "val_acc", "skip_normal", "skip_reduce", "final_params"} <= set(metrics)
    net = load_exported(out / "final_network")
    assert net.genotype == genotype and len(net.cells) == 4
    assert [e for e, _ in list_checkpoints(out / "checkpoints")] == [1, 2]

    # a rerun finds the finished checkpoints and ends with the same result
    again = run_cell_search(params, stage_context(root, params, "search"))
    assert CellGenotype.from_dict(json.loads((out / "genotype.json").read_text())) == genotype
    assert again["loss"] == metrics["loss"]


@pytest.mark.slow
def test_dcnas_sample_and_features_on_the_cell_space(searched):
    root, params, _, _ = searched
    params = params.model_copy(update={"dcnas_sample": params.dcnas_sample.model_copy(update={"num_samples": 6})})
    sampled = run_cell_sample(params, stage_context(root, params, "dcnas_sample"))
    archs = load_npy(root / "artifacts" / "dcnas_sample" / "archs.npy")
    assert sampled["num_drawn"] == 6 and archs.shape == (sampled["num_unique"], 32)
    metrics = run_cell_features(params, stage_context(root, params, "dcnas_features"))
    features = load_npy(root / "artifacts" / "dcnas_features" / "features.npy")
    assert features.shape == (len(archs), 3, 2) and metrics["num_layers"] == 3
    np.testing.assert_allclose(features[:, :, 0], 1.0, atol=1e-6)
    op_names = json.loads((root / "artifacts" / "dcnas_sample" / "summary.json").read_text())["op_names"]
    net = cell_network(params, stage_context(root, params, "retrain"), archs[0], op_names)
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)
