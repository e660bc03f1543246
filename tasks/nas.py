"""What the stages build from params, the same for every space and strategy:
the space (``search.space`` with ``spaces.<space>``), the strategy
(``search.strategy`` with ``strategies.<strategy>``, through
create_strategy), its loaders, the one-shot checkpoints of the pretrain
stage and the files the search stage leaves for DC-NAS (``tables.npz``,
``genotype.json``). No stage branches on a space or strategy name: the
protocols answer."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import Subset

from nas_core.config import Params, section_dict
from nas_core.data import DataError, weight_split
from nas_core.io import atomic_path, write_text
from nas_core.spaces import SearchSpace, make_space
from nas_core.strategies import OneShotStrategy, SearchData, SearchStrategy, SupernetSpec, create_strategy
from nas_core.strategies.data_parallel import shard_search_data
from nas_core.train.checkpoint import STATE_FORMAT, latest_good_checkpoint, list_checkpoints, load_checkpoint
from tasks.context import StageContext

CHECKPOINTS = "checkpoints"
TABLES = "tables.npz"
GENOTYPE = "genotype.json"
OWNER_FILE = "strategy.txt"


def need(path: Path, stage: str) -> Path:
    """``path`` when it exists, else a DataError naming the stage to run."""
    if not path.exists():
        raise DataError(f"{path}: missing; run `nasflow stage {stage}` (or `dvc repro {stage}`) first")
    return path


def chosen_space_section(params: Params) -> Any:
    """``spaces.<search.space>``."""
    return getattr(params.spaces, params.search.space)


def chosen_strategy_section(params: Params) -> Any:
    """``strategies.<search.strategy>``."""
    return getattr(params.strategies, params.search.strategy)


def build_space(params: Params, ctx: StageContext, measurements: str = "load") -> SearchSpace:
    """The chosen space for the data's shape. ``measurements``: ``load`` its
    measured tables (FBNet's latency) from the pretrain stage's output,
    ``measure`` them into this stage's output when missing or stale (the
    pretrain stage), or ``none``."""
    info = ctx.data_info
    space = make_space(params.search.space, chosen_space_section(params), info.input_shape, info.num_classes)
    if measurements == "none":
        return space
    measure = measurements == "measure"
    directory = ctx.out if measure else ctx.artifacts("pretrain")
    return space.with_measurements(directory, ctx.device, measure, ctx.progress)


def build_strategy(params: Params, ctx: StageContext, space: SearchSpace, name: Optional[str] = None) -> SearchStrategy:
    """Strategy ``name`` (default ``search.strategy``) with its params section."""
    name = name or params.search.strategy
    return create_strategy(name, space, getattr(params.strategies, name), ctx.device, params.runtime.seed)


def build_trainer(params: Params, ctx: StageContext, space: SearchSpace, strategy: SearchStrategy
                  ) -> Optional[OneShotStrategy]:
    """The one-shot strategy whose supernet the pretrain stage trains for
    ``strategy`` (``strategy.supernet_name()``: itself when one-shot, the
    ``supernet`` key of a multi-trial one), or None."""
    name = strategy.supernet_name()
    if name is None:
        return None
    if name == strategy.name:
        return one_shot(strategy)
    return one_shot(build_strategy(params, ctx, space, name))


def search_data(params: Params, ctx: StageContext, strategy: SearchStrategy) -> SearchData:
    """The strategy's loaders: D~ split by its ``weight_fraction`` into
    weights / architecture parameters, and the validation split (per-rank
    shards under torchrun)."""
    source, splits = ctx.source(), ctx.splits()
    fraction = strategy.config.weight_fraction
    train_w, train_a = weight_split(source.train_targets, splits["subset"].indices, fraction, params.runtime.seed,
                                    f"strategies.{strategy.name}.weight_fraction")
    data = strategy.search_data(Subset(source.train, train_w.tolist()), Subset(source.train, train_a.tolist()),
                                splits["val"], params.data.num_workers)
    return shard_search_data(data)


def last_epoch_metrics(history: list[dict[str, float]]) -> dict[str, float]:
    """The last epoch's metrics without the wall-clock and memory readings
    (those vary from run to run; they stay in history.csv and MLflow)."""
    timing = ("step_time_s", "peak_rss_mb", "cuda_peak_mb", "elapsed_s")
    return {k: float(v) for k, v in (history[-1] if history else {}).items() if k not in timing}


def chosen_sections(params: Params, strategy: Optional[str] = None) -> dict[str, Any]:
    """The params that shape a search by ``strategy`` (default
    ``search.strategy``) on the chosen space: the space's and strategy's
    sections only (what the stages log, and the resume guard)."""
    strategy = strategy or params.search.strategy
    return {"search": {"strategy": strategy, "space": params.search.space},
            f"spaces.{params.search.space}": chosen_space_section(params).model_dump(mode="json"),
            f"strategies.{strategy}": getattr(params.strategies, strategy).model_dump(mode="json")}


def fingerprint(params: Params, ctx: StageContext, space: SearchSpace, strategy: Optional[str] = None,
                **more: Any) -> str:
    """Digest of everything that shapes the work of ``strategy`` (default
    ``search.strategy``) on ``space``, plus ``more`` (resume guard of
    supernet checkpoints and trial tables): the params, and the data
    itself through the subset stage's manifest (split files' sha256 and
    the normalisation statistics measured on the training split)."""
    keys = {s: section_dict(params, s) for s in ("data", "subset")}
    manifest = need(ctx.artifacts("subset") / "manifest.json", "subset")
    keys.update(chosen_sections(params, strategy), seed=params.runtime.seed, space=space.fingerprint(),
                state_format=STATE_FORMAT,
                subset_manifest=hashlib.sha256(manifest.read_bytes()).hexdigest(), **more)
    return hashlib.sha256(json.dumps(keys, sort_keys=True, default=str).encode()).hexdigest()


def one_shot(strategy: SearchStrategy) -> OneShotStrategy:
    if not isinstance(strategy, OneShotStrategy):
        raise DataError(f"strategy {strategy.name!r} trains no supernet; DC-NAS needs a one-shot strategy "
                        "(nasflow list)")
    return strategy


def pretrain_checkpoints(ctx: StageContext) -> list[tuple[int, Path]]:
    directory = ctx.artifacts("pretrain") / CHECKPOINTS
    found = list_checkpoints(directory)
    if not found:
        raise DataError(f"{directory}: no supernet checkpoints (epoch_XXX.pt); run `nasflow stage pretrain` "
                        "(or `dvc repro pretrain`) first")
    return found


def final_checkpoint(ctx: StageContext, strategy: OneShotStrategy) -> Path:
    """The newest good pretrain checkpoint's path (a corrupt one is skipped
    and renamed, nas_core.train.checkpoint), which must be the last epoch."""
    directory = ctx.artifacts("pretrain") / CHECKPOINTS
    found = latest_good_checkpoint(directory)
    if found is None:
        raise DataError(f"{directory}: no supernet checkpoint; run `nasflow stage pretrain` first")
    epoch = found[0]
    if epoch != strategy.num_epochs():
        raise DataError(f"{directory}: newest good checkpoint is epoch {epoch} of {strategy.num_epochs()}; "
                        "rerun the pretrain stage")
    return dict(list_checkpoints(directory))[epoch]


def supernet_spec(params: Params, ctx: StageContext, space: SearchSpace) -> SupernetSpec:
    """The search's supernet strategy (:func:`build_trainer`) and its final
    pretrain checkpoint, as any worker restores it."""
    trainer = build_trainer(params, ctx, space, build_strategy(params, ctx, space))
    if trainer is None:
        raise DataError(f"strategies.{params.search.strategy}.supernet: the search has no supernet; DC-NAS and "
                        "the supernet evaluator need one (set it to a one-shot strategy, or 'auto')")
    return SupernetSpec(trainer.name, getattr(params.strategies, trainer.name).model_dump(mode="json"),
                        str(final_checkpoint(ctx, trainer)), params.runtime.seed)


def restored(params: Params, ctx: StageContext, space: Optional[SearchSpace] = None
             ) -> tuple[SearchSpace, OneShotStrategy]:
    """The space, and the search's supernet strategy restored from its
    final pretrain checkpoint (:class:`SupernetSpec`)."""
    space = space or build_space(params, ctx)
    return space, supernet_spec(params, ctx, space).restore(space, ctx.device)


def pick_epochs(found: list[tuple[int, Path]], epochs: Optional[list[int]]) -> list[tuple[int, Path]]:
    """The (epoch, path) pairs of ``dcnas_features.epochs`` among ``found``
    (None: all); a missing epoch is a DataError naming the key."""
    if epochs is None:
        return found
    by_epoch = dict(found)
    missing = [e for e in epochs if e not in by_epoch]
    if missing:
        raise DataError(f"dcnas_features.epochs = {epochs}: epochs {missing} have no supernet checkpoint "
                        f"(saved: {sorted(by_epoch)})")
    return [(e, by_epoch[e]) for e in epochs]


def same_supernet(strategy: OneShotStrategy, checkpoints: list[tuple[int, Path]], key: str
                  ) -> list[tuple[int, Path]]:
    """The checkpoints whose supernet has the shape of the last one (Eq. 7
    compares one supernet across epochs; P-DARTS rebuilds it per stage)."""
    keys = [strategy.supernet_key(load_checkpoint(p)) for _, p in checkpoints]
    kept = [c for c, k in zip(checkpoints, keys) if k == keys[-1]]
    if len(kept) < 2:
        raise DataError(f"{key}: epochs {[e for e, _ in checkpoints]} hold fewer than 2 checkpoints of the final "
                        "supernet; Eq. 7 needs two epochs of the same supernet")
    return kept


def supernets(strategy: OneShotStrategy, checkpoints: list[tuple[int, Path]]) -> Iterator[torch.nn.Module]:
    """The strategy's supernet loaded with each checkpoint in turn (one
    checkpoint in memory at a time)."""
    for _, path in checkpoints:
        yield strategy.load_supernet(load_checkpoint(path))


def save_tables(path: Path, tables: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **{k: np.asarray(v) for k, v in tables.items()})


def load_tables(path: Path, stage: str) -> dict[str, np.ndarray]:
    with np.load(need(path, stage), allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def load_genotype(space: SearchSpace, path: Path, stage: str) -> Any:
    return space.genotype_from_dict(json.loads(need(path, stage).read_text()))


def keep_one_owner(out: Path, owner: str) -> None:
    """The output persists between runs (so a killed run resumes); when the
    previous run trained another strategy or space (``strategy.txt``), its
    files are removed first, so the output only ever holds one supernet."""
    marker = out / OWNER_FILE
    if marker.is_file() and marker.read_text().strip() != owner:
        for child in out.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    write_text(marker, owner + "\n")
