"""The subset stage's core: stratified, seeded index splits (DESIGN.md 1).

From the source's training pool: a test split (the official one when the
source has it, else ``data.holdout_test_fraction`` held out), a validation
split (``subset.val_fraction`` of what remains), D = the rest, D~ =
``subset.fraction`` of D, and a probe set of ``probe_size`` images of D~.
Every split is stratified by class and depends only on the labels and the
seed. How D~ splits into weights / architecture parameters belongs to the
search strategy (its ``weight_fraction``): :func:`weight_split`.

The manifest also records the normalisation statistics, measured on the
``full_train`` split only (``training_statistics``); ``load_splits`` applies
them to every split, so no validation or test image shapes the inputs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset, Subset

from nas_core.config import DataConfig, SubsetConfig
from nas_core.data.sources import DataError, DataSource, load_source, training_statistics
from nas_core.io import load_npy, save_npy, sha256_file, write_json

SPLITS = ("full_train", "val", "test", "subset", "probe")


@dataclass(frozen=True)
class SplitIndices:
    """Sorted int64 indices per split. ``test_in_pool`` says whether the
    test indices point into the training pool (held out) or the official
    test split."""

    indices: dict[str, np.ndarray]
    test_in_pool: bool


def _stratified(idx: np.ndarray, labels: np.ndarray, fraction: float, seed: int, key: str
                ) -> tuple[np.ndarray, np.ndarray]:
    """Split ``idx`` into (kept ``fraction``, rest), stratified by label."""
    if fraction >= 1.0:
        return idx, idx[:0]
    try:
        kept, rest = train_test_split(idx, train_size=fraction, stratify=labels[idx], random_state=seed)
    except ValueError as exc:
        raise DataError(f"{key} = {fraction}: cannot split {len(idx)} samples stratified by class ({exc}); "
                        "use a larger fraction or more data") from None
    return np.sort(kept), np.sort(rest)


def make_splits(train_labels: np.ndarray, test_labels: np.ndarray | None, data: DataConfig,
                cfg: SubsetConfig, seed: int) -> SplitIndices:
    pool = np.arange(len(train_labels), dtype=np.int64)
    if test_labels is None:
        pool, test = _stratified(pool, train_labels, 1 - data.holdout_test_fraction, seed,
                                 "data.holdout_test_fraction")
    else:
        test = np.arange(len(test_labels), dtype=np.int64)
    full, val = _stratified(pool, train_labels, 1 - cfg.val_fraction, seed + 1, "subset.val_fraction")
    reduced, _ = _stratified(full, train_labels, cfg.fraction, seed + 2, "subset.fraction")
    if cfg.probe_size > len(reduced):
        raise DataError(f"subset.probe_size = {cfg.probe_size}: must be <= the size of D~ ({len(reduced)})")
    probe = np.sort(np.random.default_rng(seed + 4).choice(reduced, cfg.probe_size, replace=False))
    out = {"full_train": full, "val": val, "test": test, "subset": reduced, "probe": probe}
    return SplitIndices({k: v.astype(np.int64) for k, v in out.items()}, test_in_pool=test_labels is None)


def weight_split(train_labels: np.ndarray, subset: np.ndarray, fraction: float, seed: int,
                 key: str = "weight_fraction") -> tuple[np.ndarray, np.ndarray]:
    """D~ (``subset`` indices) split into (``train_w``: ``fraction`` of it,
    for the weights; ``train_a``: the rest, for the architecture
    parameters), stratified by class, seeded (``seed + 3``: the split the
    subset stage made before strategies owned it, so FBNet's 80/20 is
    unchanged). ``key`` names the param in errors."""
    return _stratified(np.asarray(subset, dtype=np.int64), train_labels, fraction, seed + 3, key)


def stratified_fraction(train_labels: np.ndarray, indices: np.ndarray, fraction: float, seed: int,
                        key: str) -> np.ndarray:
    """``fraction`` of ``indices``, stratified by class and seeded (sorted);
    ``key`` names the param in errors."""
    return _stratified(np.asarray(indices, dtype=np.int64), train_labels, fraction, seed, key)[0]


def class_histogram(labels: np.ndarray, idx: np.ndarray, num_classes: int) -> list[int]:
    return np.bincount(labels[idx], minlength=num_classes).tolist()


def write_splits(splits: SplitIndices, source: DataSource, out: Path, seed: int) -> dict:
    """Write one .npy per split and ``manifest.json`` (sizes, sha256, class
    histograms); returns the manifest."""
    files = {}
    for name, idx in splits.indices.items():
        path = out / f"{name}.npy"
        save_npy(path, idx)
        labels = source.test_targets if (name == "test" and not splits.test_in_pool) else source.train_targets
        files[name] = {"file": path.name, "count": int(len(idx)), "sha256": sha256_file(path),
                       "class_histogram": class_histogram(labels, idx, source.num_classes)}
    stats = training_statistics(source, splits.indices["full_train"], seed)
    manifest = {"source": source.name, "num_classes": source.num_classes,
                "input_shape": list(source.input_shape), "seed": seed,
                "test_in_pool": splits.test_in_pool, "splits": files,
                "normalization": {**stats, "split": "full_train"}}
    write_json(out / "manifest.json", manifest)
    return manifest


def load_splits(data: DataConfig, project_root: Path, subset_dir: Path) -> tuple[DataSource, dict[str, Dataset]]:
    """The datasets of every split, as lazy ``Subset`` views of the source,
    checked against the manifest written by the subset stage and normalised
    with the training split's statistics it records."""
    import json

    manifest_path = subset_dir / "manifest.json"
    if not manifest_path.is_file():
        raise DataError(f"{manifest_path} not found: run the subset stage first (`dvc repro subset`)")
    manifest = json.loads(manifest_path.read_text())
    source = load_source(data, project_root)
    if manifest["source"] != source.name:
        raise DataError(f"{manifest_path}: written for source {manifest['source']!r}, params say {source.name!r}; "
                        "rerun the subset stage")
    if "normalization" not in manifest:
        raise DataError(f"{manifest_path}: no normalisation statistics (written by an older version); "
                        "rerun the subset stage (`dvc repro subset`)")
    source.norm.set(manifest["normalization"]["mean"], manifest["normalization"]["std"])
    out = {}
    for name in SPLITS:
        idx = load_npy(subset_dir / f"{name}.npy")
        base = source.test if (name == "test" and not manifest["test_in_pool"]) else source.train
        out[name] = Subset(base, idx.tolist())
    return source, out
