"""One registry type for everything looked up by name: dataset sources,
search spaces, ops and search strategies (STYLE.md 2)."""
from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised for a name that is not registered; the message names the kind,
    the value, the allowed names and the nearest match."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def nearest(name: str, choices: list[str]) -> str | None:
    """The closest valid name to a misspelt one, or None."""
    found = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return found[0] if found else None


class Registry(Generic[T]):
    """Maps names to objects (classes or factories) of one kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        if name not in self._items:
            allowed = ", ".join(sorted(self._items))
            hint = nearest(name, list(self._items))
            did = f"; did you mean {hint!r}?" if hint else ""
            raise UnknownNameError(f"unknown {self.kind} {name!r}: allowed {allowed}{did}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
