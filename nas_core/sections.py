"""The base of every params.yaml section model (STYLE.md 6), shared by
nas_core.config and by the config models that spaces and strategies own:
unknown keys are rejected, values are frozen. :class:`CrossFieldError`
names the dotted key a check that spans fields blames."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CrossFieldError(ValueError):
    """A check spanning keys failed; ``key`` is the dotted key to blame."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        super().__init__(f"{key} = {value!r}: {allowed}")
        self.key, self.value, self.allowed = key, value, allowed


def validated_section(model: type[Section], params: Any, section: str, error: type[Exception]) -> Section:
    """``params`` (a ``model`` instance, a mapping of section ``section`` of
    params.yaml, or None for the defaults) validated by ``model``; the first
    problem is raised as ``error`` naming the dotted key, the value and what
    is allowed (a :class:`CrossFieldError` names its own key)."""
    if isinstance(params, model):
        return params
    try:
        return model.model_validate(dict(params or {}))
    except ValidationError as exc:
        first = exc.errors()[0]
        cross = (first.get("ctx") or {}).get("error")
        if isinstance(cross, CrossFieldError):
            raise error(str(cross)) from None
        key = ".".join(str(p) for p in first["loc"])
        raise error(f"{section}.{key} = {first.get('input')!r}: "
                    f"{first['msg'].removeprefix('Value error, ')}") from None
