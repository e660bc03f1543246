"""A tiny DC-NAS project for stage tests: digits splits, a few fake
pretrain checkpoints of the digits-preset supernet (weights drifting epoch
by epoch, a peaked theta), the search stage's argmax genotype, and a
StageContext factory logging to a temporary sqlite MLflow store."""
from __future__ import annotations

from pathlib import Path

import torch

from nas_core.config import Params, validate_params
from nas_core.data import load_source, make_splits, write_splits
from nas_core.io import write_json
from nas_core.spaces import Genotype, make_space
from nas_core.supernet.layerwise import LayerwiseSupernet
from nas_core.train.checkpoint import save_checkpoint
from tasks.context import StageContext
from tasks.tracking import RunLogger
from tests.conftest import REPO

TINY = {
    "runtime": {"device": "cpu", "seed": 0, "max_workers": 2},
    "subset": {"probe_size": 64},
    "pretrain": {"epochs": 3, "warmup_epochs": 1},
    "dcnas_sample": {"num_samples": 400},
    "dcnas_features": {"probe_batch_size": 32},
    "dcnas_cluster": {"k": 3, "silhouette_sample": 200},
    "evaluate": {"epochs": 1, "batch_size": 64},
    "retrain": {"epochs": 1, "batch_size": 128},
}


def tiny_params(**sections: dict) -> Params:
    raw = {k: dict(v) for k, v in TINY.items()}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return validate_params(raw)


def fake_pretrain(root: Path, params: Params) -> None:
    """Checkpoints epoch_001..003 and search/genotype.json."""
    source = load_source(params.data, REPO)
    space = make_space(params.pretrain.space, params.pretrain.preset, source.input_shape, source.num_classes)
    torch.manual_seed(0)
    net = LayerwiseSupernet(space)
    gen = torch.Generator().manual_seed(1)
    for epoch in range(1, params.pretrain.epochs + 1):
        with torch.no_grad():
            for name, p in net.named_parameters():
                p.add_(0.05 * epoch * torch.randn(p.shape, generator=gen) if name != "theta"
                       else torch.randn(p.shape, generator=gen))
        save_checkpoint(root / "artifacts" / "pretrain" / "checkpoints", epoch, {"model": net.state_dict(),
                                                                                 "epoch": epoch})
    best = net.theta.argmax(1).tolist()
    genotype = Genotype(space.name, space.preset, tuple(space.op_names[i] for i in best))
    write_json(root / "artifacts" / "search" / "genotype.json", genotype.to_dict())


def make_dcnas_project(root: Path, params: Params) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "data").symlink_to(REPO / "data")
    source = load_source(params.data, root)
    splits = make_splits(source.train_targets, source.test_targets, params.data, params.subset, params.runtime.seed)
    write_splits(splits, source, root / "artifacts" / "subset", params.runtime.seed)
    fake_pretrain(root, params)
    return root


def stage_context(root: Path, params: Params, stage: str, parent: RunLogger | None = None) -> StageContext:
    """The context the runner would build (output written in place)."""
    out = root / "artifacts" / stage
    out.mkdir(parents=True, exist_ok=True)
    if parent is None:
        parent = RunLogger.start(f"sqlite:///{root}/mlflow.db", "tests", "pipeline", root)
    log = parent.child(f"stage:{stage}")
    return StageContext(stage, root, params, out, torch.device("cpu"), log)
