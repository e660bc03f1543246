"""``supernet``: weight sharing. The genotype's single path through a
trained one-shot supernet (the pretrain stage's final checkpoint) is scored
without training: the path inherits the supernet's weights, BatchNorm's
running statistics are recalibrated for that path on ``bn_batches`` training
batches, and ``score`` is the path's validation accuracy.

Why recalibrate: the supernet's running statistics average over every path
it trained, so a single path evaluated with them is biased (Guo et al.,
Single-Path One-Shot, 2020, recalibrate the same way). Recalibration resets
the statistics and takes their cumulative average (momentum None) over the
batches, which the evaluator draws in a fixed order from ``seed``; the
supernet's own statistics are restored afterwards, so trials do not affect
each other and the order in which a worker runs them does not matter.

The path runs through the Supernet protocol (``path_begin``, ``path_step``
for every layer, ``path_logits``) on the row ``space.encode(genotype)``, so
this works for every space with a supernet.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

import numpy as np
import torch
from pydantic import Field
from torch import nn

from nas_core.evaluators.base import EVALUATORS, EvalData, Evaluator, EvaluatorError
from nas_core.sections import Section
from nas_core.train.loop import make_loader

BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class SupernetEvalConfig(Section):
    """``bn_batches`` training batches of ``batch_size`` images recalibrate
    BatchNorm (0: keep the supernet's statistics); ``max_val_images`` caps
    the validation images scored (None: all)."""

    bn_batches: int = Field(4, ge=0)
    batch_size: int = Field(128, ge=1)
    max_val_images: Optional[int] = Field(None, ge=1)


@contextlib.contextmanager
def recalibrated(model: nn.Module) -> Iterator[list[nn.Module]]:
    """Yield the BatchNorm layers reset for a cumulative re-estimate, and
    restore their statistics and momentum afterwards."""
    norms = [m for m in model.modules() if isinstance(m, BN_TYPES) and m.track_running_stats]
    saved = [({k: v.clone() for k, v in m.state_dict().items()}, m.momentum) for m in norms]
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        yield norms
    finally:
        for m, (state, momentum) in zip(norms, saved):
            m.load_state_dict(state)
            m.momentum = momentum


def path_forward(supernet: Any, x: torch.Tensor, row: np.ndarray) -> torch.Tensor:
    """Logits of sub-network ``row`` (Supernet protocol)."""
    state = supernet.path_begin(x)
    for depth in range(supernet.path_depth()):
        state, _ = supernet.path_step(depth, state, row)
    return supernet.path_logits(state)


@EVALUATORS.register("supernet")
class SupernetEvaluator(Evaluator):
    name = "supernet"
    Config = SupernetEvalConfig
    needs_supernet = True

    def evaluate(self, genotype: Any, data: EvalData, seed: int, budget: Optional[int] = None,
                 supernet: Optional[nn.Module] = None) -> dict[str, float]:
        if supernet is None:
            raise EvaluatorError("evaluator 'supernet' needs a trained supernet: run the pretrain stage with a "
                                 "one-shot strategy on this space (strategies.<name>.supernet)")
        row = supernet.check_rows(self.space.encode(genotype)[None])[0]
        supernet.to(self.device)
        was_training = supernet.training
        try:
            with torch.no_grad(), recalibrated(supernet):
                self._recalibrate(supernet, row, data, seed)
                supernet.eval()
                acc, loss = self._score(supernet, row, data)
        finally:
            supernet.train(was_training)
        return {"score": acc, "val_acc": acc, "val_loss": loss}

    def _recalibrate(self, supernet: nn.Module, row: np.ndarray, data: EvalData, seed: int) -> None:
        supernet.train()
        loader = make_loader(data.train, self.config.batch_size, shuffle=True, seed=seed)
        for i, (x, _) in enumerate(loader):
            if i >= self.config.bn_batches:
                break
            path_forward(supernet, x.to(self.device), row)

    def _score(self, supernet: nn.Module, row: np.ndarray, data: EvalData) -> tuple[float, float]:
        correct, total, loss = 0, 0, 0.0
        cap = self.config.max_val_images or len(data.val)  # type: ignore[arg-type]
        for x, y in make_loader(data.val, self.config.batch_size, shuffle=False):
            x, y = x[:cap - total].to(self.device), y[:cap - total].to(self.device)
            logits = path_forward(supernet, x, row)
            loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            total += len(y)
            if total >= cap:
                break
        return correct / total, loss / total
