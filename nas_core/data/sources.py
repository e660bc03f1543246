"""Dataset sources, registered by name (DESIGN.md, Data).

Every source returns a :class:`DataSource`: a training pool (D, validation
and D~ are carved from it by the subset stage), an optional official test
split, labels as NumPy arrays (so splitting never touches the images), and
datasets whose items are ``(float tensor C×H×W, normalised; int label)``.
Nothing is ever downloaded: a missing or malformed root raises
:class:`DataError` naming the expected files and how to pin them.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from nas_core.config import DataConfig
from nas_core.io import atomic_path
from nas_core.registry import Registry, UnknownNameError

PIN_HINT = "put the files there and pin them with `dvc add data` (then commit data.dvc)"


class DataError(ValueError):
    """A dataset root is missing or malformed; the message names the files."""


@dataclass
class DataSource:
    name: str
    train: Dataset
    train_targets: np.ndarray
    test: Optional[Dataset]
    test_targets: Optional[np.ndarray]
    num_classes: int
    input_shape: tuple[int, int, int]
    root: Path


SOURCES: Registry[Callable[[DataConfig, Path], DataSource]] = Registry("dataset source")


def load_source(cfg: DataConfig, project_root: Path | str = ".") -> DataSource:
    """Build the source named by ``data.source`` with ``data.root``
    resolved against the project root."""
    try:
        factory = SOURCES.get(cfg.source)
    except UnknownNameError as exc:
        raise DataError(f"data.source = {cfg.source!r}: {exc}") from None
    root = Path(cfg.root)
    if not root.is_absolute():
        root = Path(project_root) / root
    return factory(cfg, root)


class ArrayImages(Dataset):
    """Images held as a uint8 array (N, H, W) or (N, H, W, C), normalised per
    channel on access. Subsets index into it; nothing is copied."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, scale: float,
                 mean: Sequence[float], std: Sequence[float]) -> None:
        if images.ndim == 3:
            images = images[:, :, :, None]
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.scale = scale
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = self.images[index].permute(2, 0, 1).float() / self.scale
        return (x - self.mean) / self.std, int(self.labels[index])

    @property
    def shape(self) -> tuple[int, int, int]:
        n, h, w, c = self.images.shape
        return (c, h, w)


# ---------------------------------------------------------------- digits
DIGITS_FILES = ("images.npy", "labels.npy")


def materialize_digits(data_root: Path) -> Path:
    """Write scikit-learn's bundled digits (1,797 8×8 images, values 0-16)
    under ``<data_root>/digits`` as .npy files. ``np.save`` output depends
    only on the array, so the bytes are identical on every machine and
    ``data.dvc`` pins them."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    out = data_root / "digits"
    out.mkdir(parents=True, exist_ok=True)
    arrays = {"images.npy": bunch.images.astype(np.uint8), "labels.npy": bunch.target.astype(np.int64)}
    for name, array in arrays.items():
        with atomic_path(out / name) as tmp, open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)
    return out


@SOURCES.register("digits")
def digits_source(cfg: DataConfig, root: Path) -> DataSource:
    """The embedded default: real handwritten digits, no download. There is
    no official test split; the subset stage holds one out."""
    folder = root / "digits"
    missing = [f for f in DIGITS_FILES if not (folder / f).is_file()]
    if missing:
        raise DataError(f"data.root={cfg.root}: digits files missing in {folder} ({', '.join(missing)}); "
                        "run `nasflow prepare` to write them from scikit-learn's bundled copy, "
                        "then `dvc add data`")
    images = np.load(folder / "images.npy", allow_pickle=False)
    labels = np.load(folder / "labels.npy", allow_pickle=False)
    _check_pair(images, labels, folder, expect_hw=(8, 8))
    ds = ArrayImages(images, labels, scale=16.0, mean=(0.3053,), std=(0.3760,))
    return DataSource("digits", ds, labels, None, None, 10, ds.shape, folder)


def _check_pair(images: np.ndarray, labels: np.ndarray, where: Path, expect_hw: tuple[int, int]) -> None:
    if images.ndim != 3 or images.shape[1:] != expect_hw or len(images) != len(labels):
        raise DataError(f"{where}: malformed images {images.shape} / labels {labels.shape}; "
                        f"expected (N, {expect_hw[0]}, {expect_hw[1]}) and (N,)")


# ---------------------------------------------------------------- MNIST (IDX)
MNIST_SPLITS = {"train": "train", "test": "t10k"}


def _find_idx(root: Path, stem: str) -> Optional[Path]:
    for folder in (root, root / "mnist", root / "MNIST" / "raw"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzip'd): big-endian header, uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path}: truncated IDX file (header says {tuple(dims)})")
    return data.reshape(tuple(dims)).copy()  # frombuffer views are read-only


def _mnist_split(root: Path, prefix: str) -> Optional[tuple[np.ndarray, np.ndarray]]:
    images = _find_idx(root, f"{prefix}-images-idx3-ubyte")
    labels = _find_idx(root, f"{prefix}-labels-idx1-ubyte")
    if images is None or labels is None:
        return None
    x, y = read_idx(images), read_idx(labels).astype(np.int64)
    _check_pair(x, y, images.parent, expect_hw=(28, 28))
    return x, y


@SOURCES.register("mnist")
def mnist_source(cfg: DataConfig, root: Path) -> DataSource:
    """MNIST IDX files (torchvision's layout or flat, gzip'd or not). With
    only the t10k files present they form the pool and a test split is
    held out (data.holdout_test_fraction)."""
    train = _mnist_split(root, "train")
    test = _mnist_split(root, "t10k")
    if train is None and test is None:
        raise DataError(f"data.root={cfg.root}: no MNIST files in {root} (or {root}/mnist, {root}/MNIST/raw); "
                        "expected train-images-idx3-ubyte[.gz] + train-labels-idx1-ubyte[.gz] and/or "
                        f"t10k-images-idx3-ubyte[.gz] + t10k-labels-idx1-ubyte[.gz]; {PIN_HINT}")
    wrap = lambda xy: ArrayImages(xy[0], xy[1], 255.0, (0.1307,), (0.3081,))  # noqa: E731
    if train is None:
        train, test = test, None
    pool = wrap(train)
    test_ds = wrap(test) if test is not None else None
    return DataSource("mnist", pool, train[1], test_ds, None if test is None else test[1], 10, pool.shape, root)


# ---------------------------------------------------------------- torchvision sources
CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "cifar-10-batches-py",
                "data_batch_1..5, test_batch, batches.meta"),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "cifar-100-python",
                 "train, test, meta"),
}


def _tensor_transform(mean: Sequence[float], std: Sequence[float], size: Optional[int] = None):
    from torchvision.transforms import v2

    steps = [v2.ToImage()]
    if size is not None:
        steps += [v2.Resize(size, antialias=True), v2.CenterCrop(size)]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    return v2.Compose(steps)


def _cifar(name: str, cfg: DataConfig, root: Path) -> DataSource:
    from torchvision import datasets

    mean, std, folder, files = CIFAR_STATS[name]
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    tf = _tensor_transform(mean, std)
    try:
        train = cls(str(root), train=True, download=False, transform=tf)
        test = cls(str(root), train=False, download=False, transform=tf)
    except RuntimeError as exc:
        raise DataError(f"data.root={cfg.root}: {name} not found or corrupted in {root}/{folder} "
                        f"(expected the python-version batches: {files}); {PIN_HINT}") from exc
    classes = 10 if name == "cifar10" else 100
    return DataSource(name, train, np.asarray(train.targets), test, np.asarray(test.targets),
                      classes, (3, 32, 32), root)


SOURCES.register("cifar10")(lambda cfg, root: _cifar("cifar10", cfg, root))
SOURCES.register("cifar100")(lambda cfg, root: _cifar("cifar100", cfg, root))


@SOURCES.register("imagefolder")
def imagefolder_source(cfg: DataConfig, root: Path) -> DataSource:
    """ImageNet-100 style: ``<root>/train/<class>/*.jpg`` and optionally
    ``<root>/val/<class>/*.jpg``; images are decoded lazily per item,
    resized to ``data.image_size`` (default 224)."""
    from torchvision import datasets

    size = cfg.image_size or 224
    if not (root / "train").is_dir():
        raise DataError(f"data.root={cfg.root}: expected {root}/train/<class>/<image> "
                        f"(and optionally {root}/val/<class>/<image>); {PIN_HINT}")
    tf = _tensor_transform((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), size)
    train = datasets.ImageFolder(str(root / "train"), transform=tf)
    test = datasets.ImageFolder(str(root / "val"), transform=tf) if (root / "val").is_dir() else None
    if test is not None and test.classes != train.classes:
        raise DataError(f"{root}/val: class folders differ from {root}/train")
    return DataSource("imagefolder", train, np.asarray(train.targets), test,
                      None if test is None else np.asarray(test.targets),
                      len(train.classes), (3, size, size), root)


@SOURCES.register("fake")
def fake_source(cfg: DataConfig, root: Path) -> DataSource:
    """torchvision's FakeData (random images), for smoke tests only."""
    from torchvision import datasets

    f = cfg.fake
    c, h, w = f.image_shape
    tf = _tensor_transform((0.5,) * c, (0.5,) * c)
    train = datasets.FakeData(f.num_samples, (c, h, w), f.num_classes, transform=tf, random_offset=0)
    targets = np.array([int(train[i][1]) for i in range(len(train))])
    return DataSource("fake", train, targets, None, None, f.num_classes, (c, h, w), root)
