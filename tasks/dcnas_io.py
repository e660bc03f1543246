"""Inputs shared by the DC-NAS stages: the layer-wise space of the pretrain
stage, its per-epoch checkpoints, and the outputs of earlier DC-NAS stages.
A missing upstream output is a DataError naming the stage to run."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from nas_core.data import DataError
from nas_core.io import load_npy
from nas_core.spaces import Genotype, LayerwiseSpace
from nas_core.train.checkpoint import list_checkpoints, load_checkpoint
from tasks.pretrain import CHECKPOINTS, LATENCY_FILE, layerwise_space

__all__ = ["CHECKPOINTS", "LATENCY_FILE", "layerwise_space", "pretrain_checkpoints", "pick_epochs", "chosen_checkpoints",
           "model_states", "final_probabilities", "need", "load_samples", "genotype_of"]


def pretrain_checkpoints(ctx: Any) -> list[tuple[int, Path]]:
    directory = ctx.artifacts("pretrain") / CHECKPOINTS
    found = list_checkpoints(directory)
    if not found:
        raise DataError(f"{directory}: no pretrain checkpoints (epoch_XXX.pt); run `nasflow stage pretrain` "
                        "(or `dvc repro pretrain`) first")
    return found


def pick_epochs(found: list[tuple[int, Path]], epochs: list[int] | None, what: str = "checkpoint"
                ) -> list[tuple[int, Path]]:
    """The (epoch, path) pairs of ``dcnas_features.epochs`` among ``found``
    (None: all of them); a missing epoch is a DataError naming the key."""
    if epochs is None:
        return found
    by_epoch = dict(found)
    missing = [e for e in epochs if e not in by_epoch]
    if missing:
        raise DataError(f"dcnas_features.epochs = {epochs}: epochs {missing} have no {what} "
                        f"(saved: {sorted(by_epoch)})")
    return [(e, by_epoch[e]) for e in epochs]


def chosen_checkpoints(ctx: Any, epochs: list[int] | None) -> list[tuple[int, Path]]:
    """The pretrain checkpoints of ``dcnas_features.epochs`` (None: all saved)."""
    return pick_epochs(pretrain_checkpoints(ctx), epochs)


def model_states(checkpoints: list[tuple[int, Path]]) -> Iterator[dict[str, torch.Tensor]]:
    """Supernet state_dicts, loaded one at a time (weights_only)."""
    for _, path in checkpoints:
        yield load_checkpoint(path)["model"]


def final_probabilities(ctx: Any) -> tuple[int, np.ndarray]:
    """(epoch, softmax(theta) per layer) of the last pretrain checkpoint."""
    epoch, path = pretrain_checkpoints(ctx)[-1]
    theta = load_checkpoint(path)["model"]["theta"]
    return epoch, torch.softmax(theta.double(), dim=1).numpy()


def need(path: Path, stage: str) -> Path:
    if not path.exists():
        raise DataError(f"{path}: missing; run `nasflow stage {stage}` (or `dvc repro {stage}`) first")
    return path


def load_samples(ctx: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(archs (u, L), counts (u,), probs (L, n_ops)) of dcnas_sample."""
    out = ctx.artifacts("dcnas_sample")
    return tuple(load_npy(need(out / name, "dcnas_sample")) for name in ("archs.npy", "counts.npy", "probs.npy"))


def genotype_of(space: LayerwiseSpace, row: np.ndarray) -> Genotype:
    return Genotype(space.name, space.preset, tuple(space.op_names[int(i)] for i in row))
