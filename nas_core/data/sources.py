"""Dataset sources, registered by name (DESIGN.md, Data).

Every source returns a :class:`DataSource`: a training pool (D, validation
and D~ are carved from it by the subset stage), an optional official test
split, labels as NumPy arrays (so splitting never touches the images), and
datasets whose items are ``(float tensor C×H×W, normalised; int label)``.
Normalisation statistics come from the training split only (never from
validation or test images): a source starts with the identity (images
scaled to [0, 1]); the subset stage measures the per-channel mean and std
of its ``full_train`` split (:func:`training_statistics`) and records them
in its manifest; every later stage applies them (``load_splits``). Nothing
is ever downloaded: a missing or malformed root raises
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


#: Images read to estimate the statistics of a source that decodes images one
#: by one (torchvision datasets, image folders); array sources use them all.
STATS_IMAGES = 2000


class Normalization:
    """Per-channel ``(x - mean) / std`` shared by all datasets of a source,
    the identity until the training split's statistics are set."""

    def __init__(self, channels: int) -> None:
        self.channels = channels
        self.set([0.0] * channels, [1.0] * channels)

    def set(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if not len(mean) == len(std) == self.channels or min(std) <= 0:
            raise DataError(f"normalisation statistics need {self.channels} means and {self.channels} positive "
                            f"stds (one per channel), got mean {list(mean)} and std {list(std)}")
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (torch.as_tensor(x) - self.mean) / self.std

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(x) * self.std + self.mean


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
    norm: Optional[Normalization] = None

    def __post_init__(self) -> None:
        if self.norm is None:
            self.norm = getattr(self.train, "norm", None) or Normalization(self.input_shape[0])


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
    """Images held as a uint8 array (N, H, W) or (N, H, W, C), scaled by
    ``scale`` and normalised per channel by ``norm`` on access (a shared
    :class:`Normalization`, so the pool and an official test split of one
    source use the same statistics). Subsets index into it; nothing is
    copied."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, scale: float,
                 norm: Optional[Normalization] = None) -> None:
        if images.ndim == 3:
            images = images[:, :, :, None]
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.scale = scale
        self.norm = norm or Normalization(self.images.shape[3])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = self.images[index].permute(2, 0, 1).float() / self.scale
        return self.norm(x), int(self.labels[index])

    def scaled(self, indices: np.ndarray) -> np.ndarray:
        """The images at ``indices`` as float64 (N, H, W, C), before normalisation."""
        return self.images.numpy()[np.asarray(indices, dtype=np.int64)].astype(np.float64) / self.scale

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
    ds = ArrayImages(images, labels, scale=16.0)
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
    norm = Normalization(1)
    wrap = lambda xy: ArrayImages(xy[0], xy[1], 255.0, norm)  # noqa: E731
    if train is None:
        train, test = test, None
    pool = wrap(train)
    test_ds = wrap(test) if test is not None else None
    return DataSource("mnist", pool, train[1], test_ds, None if test is None else test[1], 10, pool.shape, root)


# ---------------------------------------------------------------- torchvision sources
CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py", "data_batch_1..5, test_batch, batches.meta"),
    "cifar100": ("cifar-100-python", "train, test, meta"),
}


def _tensor_transform(norm: Normalization, size: Optional[int] = None):
    from torchvision.transforms import v2

    steps = [v2.ToImage()]
    if size is not None:
        steps += [v2.Resize(size, antialias=True), v2.CenterCrop(size)]
    steps += [v2.ToDtype(torch.float32, scale=True), norm]
    return v2.Compose(steps)


def _cifar(name: str, cfg: DataConfig, root: Path) -> DataSource:
    from torchvision import datasets

    folder, files = CIFAR_FILES[name]
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    norm = Normalization(3)
    tf = _tensor_transform(norm)
    try:
        train = cls(str(root), train=True, download=False, transform=tf)
        test = cls(str(root), train=False, download=False, transform=tf)
    except RuntimeError as exc:
        raise DataError(f"data.root={cfg.root}: {name} not found or corrupted in {root}/{folder} "
                        f"(expected the python-version batches: {files}); {PIN_HINT}") from exc
    classes = 10 if name == "cifar10" else 100
    return DataSource(name, train, np.asarray(train.targets), test, np.asarray(test.targets),
                      classes, (3, 32, 32), root, norm)


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
    norm = Normalization(3)
    tf = _tensor_transform(norm, size)
    train = datasets.ImageFolder(str(root / "train"), transform=tf)
    test = datasets.ImageFolder(str(root / "val"), transform=tf) if (root / "val").is_dir() else None
    if test is not None and test.classes != train.classes:
        raise DataError(f"{root}/val: class folders differ from {root}/train")
    return DataSource("imagefolder", train, np.asarray(train.targets), test,
                      None if test is None else np.asarray(test.targets),
                      len(train.classes), (3, size, size), root, norm)


@SOURCES.register("fake")
def fake_source(cfg: DataConfig, root: Path) -> DataSource:
    """torchvision's FakeData (random images), for smoke tests only."""
    from torchvision import datasets

    f = cfg.fake
    c, h, w = f.image_shape
    norm = Normalization(c)
    train = datasets.FakeData(f.num_samples, (c, h, w), f.num_classes, transform=_tensor_transform(norm),
                              random_offset=0)
    targets = np.array([int(train[i][1]) for i in range(len(train))])
    return DataSource("fake", train, targets, None, None, f.num_classes, (c, h, w), root, norm)


# ---------------------------------------------------------------- statistics
def training_statistics(source: DataSource, indices: np.ndarray, seed: int,
                        max_images: int = STATS_IMAGES) -> dict[str, list[float]]:
    """Per-channel mean and std (population, over every pixel) of the
    training-pool images at ``indices`` -- the training split, never the
    validation or test images. Array sources use every image; other
    sources read a seeded sample of at most ``max_images`` of them (decoding
    a whole image folder per run would dominate the subset stage)."""
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) == 0:
        raise DataError("normalisation statistics need at least one training image (the training split is empty)")
    if isinstance(source.train, ArrayImages):
        pixels = source.train.scaled(indices)
        mean, std = pixels.mean(axis=(0, 1, 2)), pixels.std(axis=(0, 1, 2))
    else:
        if len(indices) > max_images:
            indices = np.sort(np.random.default_rng(seed).choice(indices, max_images, replace=False))
        images = torch.stack([source.norm.invert(source.train[int(i)][0]) for i in indices]).double()
        mean, std = images.mean(dim=(0, 2, 3)).numpy(), images.std(dim=(0, 2, 3), unbiased=False).numpy()
    if np.any(std <= 0):
        raise DataError(f"{source.root}: the training images are constant in a channel (std {std.tolist()}); "
                        "cannot normalise")
    return {"mean": [float(m) for m in mean], "std": [float(v) for v in std]}
