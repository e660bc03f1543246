"""Measured latency: :func:`time_module` times one module on one input.

Each timing runs ``warmup`` untimed calls, then ``repeats`` timings of
``number`` calls each, in eval mode under ``torch.no_grad``, and returns the
**minimum** per-call time in milliseconds (as ``timeit`` advises: on a
shared machine other load only ever adds time, so the minimum is the most
repeatable estimate). CUDA is synchronised around each timing. Per-space
latency tables (FBNet's) are built from it in the space's package.
"""
from __future__ import annotations

import time
from typing import Callable

import torch
from torch import nn


def time_module(module: nn.Module, x: torch.Tensor, repeats: int, number: int = 10, warmup: int = 2) -> float:
    """Minimum milliseconds per call of ``module(x)`` (no grad, eval mode)."""
    sync: Callable[[], None] = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    module.eval()
    times = []
    with torch.no_grad():
        for _ in range(warmup):
            module(x)
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            for _ in range(number):
                module(x)
            sync()
            times.append((time.perf_counter() - start) * 1000.0 / number)
    return float(min(times))
