"""The base of every params.yaml section model (STYLE.md 6), shared by
nas_core.config and by the config models that spaces and strategies own:
unknown keys are rejected, values are frozen. :class:`CrossFieldError`
names the dotted key a check that spans fields blames."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CrossFieldError(ValueError):
    """A check spanning keys failed; ``key`` is the dotted key to blame."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        super().__init__(f"{key} = {value!r}: {allowed}")
        self.key, self.value, self.allowed = key, value, allowed
