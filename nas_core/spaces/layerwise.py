"""FBNet's layer-wise search space: a fixed macro-architecture whose
searchable layers each pick one of the nine candidate blocks (ops.py).

Macro-architecture (FBNet Table 1; reference-notes.md)::

    3x3 conv (stem, BN, ReLU) -> searchable layers in stages (f, n, s)
    -> 1x1 conv (head, BN, ReLU) -> global average pool -> fc

A stage ``(f, n, s)`` has ``n`` layers with ``f`` output channels; only its
first layer has stride ``s``. Presets by input size:

* ``imagenet`` — FBNet's macro for 224x224 inputs, 22 searchable layers
  (a 9^22 space).
* ``cifar`` — 32x32 inputs: FBNet's channels, stage depths 4 -> 2 and a
  stride-1 stem and first strided stage, 12 layers.
* ``mnist`` — 28x28 grey inputs: 7 layers, 8-32 channels.
* ``digits`` — scikit-learn's 8x8 digits: 6 layers, 8-32 channels; a
  pre-training epoch on 2 CPU cores takes seconds.

Every channel count is even so the group-2 blocks apply everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from nas_core.registry import nearest
from nas_core.spaces.ops import FBNET_OP_NAMES


@dataclass(frozen=True)
class LayerSpec:
    in_channels: int
    out_channels: int
    stride: int


@dataclass(frozen=True)
class FbnetPreset:
    """``stages`` holds (channels f, layers n, first stride s) per stage."""

    stem_channels: int
    stem_stride: int
    stages: tuple[tuple[int, int, int], ...]
    head_channels: int


FBNET_PRESETS: Mapping[str, FbnetPreset] = {
    "imagenet": FbnetPreset(16, 2, ((16, 1, 1), (24, 4, 2), (32, 4, 2), (64, 4, 2),
                                    (112, 4, 1), (184, 4, 2), (352, 1, 1)), 1984),
    "cifar": FbnetPreset(16, 1, ((16, 1, 1), (24, 2, 1), (32, 2, 2), (64, 2, 2),
                                 (112, 2, 1), (184, 2, 2), (352, 1, 1)), 1504),
    "mnist": FbnetPreset(8, 1, ((8, 1, 1), (16, 2, 2), (24, 2, 2), (32, 2, 2)), 128),
    "digits": FbnetPreset(8, 1, ((8, 1, 1), (16, 2, 2), (24, 2, 1), (32, 1, 2)), 64),
}


@dataclass(frozen=True)
class LayerwiseSpace:
    """A concrete layer-wise space: the macro-architecture for one input
    shape and class count, and the candidate op names (table columns)."""

    name: str
    preset: str
    input_shape: tuple[int, int, int]
    num_classes: int
    stem_channels: int
    layers: tuple[LayerSpec, ...]
    head_channels: int
    op_names: tuple[str, ...]
    stem_stride: int = 1

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def num_ops(self) -> int:
        return len(self.op_names)

    @property
    def size(self) -> int:
        """Number of architectures: n_ops ** num_layers."""
        return self.num_ops ** self.num_layers

    def stem_hw(self) -> tuple[int, int]:
        _, h, w = self.input_shape
        return _strided(h, self.stem_stride), _strided(w, self.stem_stride)

    def layer_input_hw(self, index: int) -> tuple[int, int]:
        """Spatial size of the input of searchable layer ``index``."""
        h, w = self.stem_hw()
        for spec in self.layers[:index]:
            h, w = _strided(h, spec.stride), _strided(w, spec.stride)
        return h, w

    def layer_output_hw(self, index: int) -> tuple[int, int]:
        h, w = self.layer_input_hw(index)
        stride = self.layers[index].stride
        return _strided(h, stride), _strided(w, stride)

    def final_hw(self) -> tuple[int, int]:
        return self.layer_output_hw(self.num_layers - 1)

    def op_index(self, op_name: str) -> int:
        if op_name not in self.op_names:
            raise ValueError(f"op {op_name!r} is not in space {self.name}/{self.preset} "
                             f"(allowed: {', '.join(self.op_names)})")
        return self.op_names.index(op_name)


def _strided(size: int, stride: int) -> int:
    """Output size of a conv with padding k//2: ceil(size / stride)."""
    return (size - 1) // stride + 1


def fbnet_space(preset: str, input_shape: tuple[int, int, int], num_classes: int) -> LayerwiseSpace:
    """The FBNet space for ``preset`` (a key of :data:`FBNET_PRESETS`)."""
    if preset not in FBNET_PRESETS:
        hint = nearest(preset, list(FBNET_PRESETS))
        did = f"; did you mean {hint!r}?" if hint else ""
        raise ValueError(f"unknown fbnet preset {preset!r}: allowed {', '.join(FBNET_PRESETS)}{did}")
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape = {input_shape!r}: expected (channels, height, width), all >= 1")
    if num_classes < 2:
        raise ValueError(f"num_classes = {num_classes}: need at least 2")
    p = FBNET_PRESETS[preset]
    layers, channels = [], p.stem_channels
    for out, count, stride in p.stages:
        for i in range(count):
            layers.append(LayerSpec(channels, out, stride if i == 0 else 1))
            channels = out
    return LayerwiseSpace(name="fbnet", preset=preset, input_shape=shape, num_classes=num_classes,
                          stem_channels=p.stem_channels, layers=tuple(layers),
                          head_channels=p.head_channels, op_names=FBNET_OP_NAMES,
                          stem_stride=p.stem_stride)
