"""A layer-wise architecture as a value (STYLE.md 1): frozen, hashable,
printable, JSON round-trip; op names are checked against the OPS registry,
never evaluated. :meth:`LayerwiseSpace.genotype_from_dict` also checks that
a genotype fits the space (preset, layer count, op table)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from nas_core.registry import nearest
from nas_core.spaces.base import GenotypeError
from nas_core.spaces.layerwise.ops import OPS

SPACE_NAME = "layerwise"
_KEYS = ("ops", "preset", "space")


@dataclass(frozen=True)
class LayerwiseGenotype:
    """One op name per searchable layer of the layer-wise space of preset
    ``preset`` (``space`` is always ``"layerwise"``)."""

    space: str
    preset: str
    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        if isinstance(self.ops, list):
            object.__setattr__(self, "ops", tuple(self.ops))
        if self.space != SPACE_NAME:
            raise GenotypeError(f"genotype space = {self.space!r}: a layer-wise genotype has space {SPACE_NAME!r}")
        if not isinstance(self.ops, tuple) or not self.ops:
            raise GenotypeError(f"genotype ops = {self.ops!r}: expected a non-empty list of op names")
        for layer, op in enumerate(self.ops):
            if not isinstance(op, str) or op not in OPS:
                hint = nearest(op, OPS.names()) if isinstance(op, str) else None
                did = f"; did you mean {hint!r}?" if hint else ""
                raise GenotypeError(f"genotype layer {layer}: unknown op {op!r} "
                                    f"(allowed: {', '.join(OPS.names())}){did}")

    def __str__(self) -> str:
        return f"{self.space}/{self.preset}: " + " | ".join(self.ops)

    def to_dict(self) -> dict[str, Any]:
        return {"space": self.space, "preset": self.preset, "ops": list(self.ops)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, obj: Any) -> "LayerwiseGenotype":
        if not isinstance(obj, dict) or tuple(sorted(obj)) != _KEYS:
            got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
            raise GenotypeError(f"genotype JSON must be an object with keys {list(_KEYS)}, got {got}")
        if not isinstance(obj["ops"], list):
            raise GenotypeError(f"genotype 'ops' must be a list of op names, got {obj['ops']!r}")
        return cls(str(obj["space"]), str(obj["preset"]), tuple(obj["ops"]))

    @classmethod
    def from_json(cls, text: str) -> "LayerwiseGenotype":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GenotypeError(f"genotype is not valid JSON: {exc}") from None
        return cls.from_dict(obj)

    def indices(self, op_names: tuple[str, ...]) -> list[int]:
        """Column index of each layer's op in a space's op table."""
        return [op_names.index(op) for op in self.ops]

    def check(self, space: Any) -> None:
        """Raise :class:`GenotypeError` unless this genotype fits ``space``."""
        if (self.space, self.preset) != (space.name, space.preset):
            raise GenotypeError(f"genotype is for {self.space}/{self.preset}, "
                                f"the space is {space.name}/{space.preset}")
        if len(self.ops) != space.num_layers:
            raise GenotypeError(f"genotype has {len(self.ops)} layers, "
                                f"space {space.name}/{space.preset} has {space.num_layers}")
        extra = sorted(set(self.ops) - set(space.op_names))
        if extra:
            raise GenotypeError(f"genotype uses ops {extra} that space {space.name} lacks "
                                f"(allowed: {', '.join(space.op_names)})")
