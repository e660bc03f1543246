"""The Supernet protocol: what DC-NAS needs from a one-shot supernet
(docs/ARCHITECTURE.md, "The protocols").

A supernet is an ``nn.Module`` whose sub-networks are the encoded genotypes
of its space (``SearchSpace.encode`` rows). DC-NAS Eq. 7 runs one
sub-network at a time, layer by layer, through :meth:`path_begin` and
:meth:`path_step`; the output of "layer" ``depth`` (a searchable layer, a
cell, a block: whatever the space calls a layer) depends only on the first
:meth:`path_prefix` entries of the row, so sub-networks that agree on those
entries share that computation (the prefix trie of nas_core.dcnas.features).
A whole path ends in :meth:`path_logits`. Eq. 6 compares the parameters a sub-network uses at a layer
(:meth:`path_parameter_names`) between epochs.

The architecture-probability tables a supernet is trained with belong to
its strategy (``OneShotStrategy.tables``); DC-NAS samples from them and
scores with them through the space (``sample``, ``score``).
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class Supernet(Protocol):
    def path_depth(self) -> int:
        """Number of layers L with a feature (the L of the s x L x eta tensor)."""

    def path_prefix(self, depth: int) -> int:
        """How many leading row entries the output of layer ``depth`` depends
        on (non-decreasing in ``depth``)."""

    def check_rows(self, rows: np.ndarray) -> np.ndarray:
        """``rows`` as int64 after checking they are sub-networks of this
        supernet (a ValueError naming the bad entry otherwise)."""

    def path_begin(self, x: torch.Tensor) -> Any:
        """The state before layer 0 (e.g. the stem output) for images ``x``."""

    def path_step(self, depth: int, state: Any, row: np.ndarray) -> tuple[Any, torch.Tensor]:
        """Run layer ``depth`` of sub-network ``row`` on ``state``; return the
        next state and the layer's output (N, C, ...), which DC-NAS pools."""

    def path_logits(self, state: Any) -> torch.Tensor:
        """The class logits of the sub-network whose last layer left
        ``state`` (the supernet's head on it): the weight-sharing evaluator
        (nas_core.evaluators.supernet) scores a whole path with it."""

    def path_parameter_names(self, depth: int, row: np.ndarray) -> tuple[str, ...]:
        """``state_dict`` keys of the trainable parameters that ``row`` uses
        in layer ``depth`` (Eq. 6); empty for parameter-free choices."""
