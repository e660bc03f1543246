"""Device choice and seeding, done once from params (STYLE.md 9)."""
from __future__ import annotations

import os
import random

import numpy as np
import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; anything else is passed
    to ``torch.device`` after checking that the device exists."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"runtime.device={name!r} but no CUDA device is present: use 'cpu' or 'auto'")
    return device


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch. ``deterministic`` asks torch for
    deterministic kernels (bit-identical reruns on the CPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def set_threads(n: int | None) -> None:
    if n:
        torch.set_num_threads(n)
