"""A name → object registry: datasets, models, optimizers (and later techniques) each keep one.

Lookups of unknown names raise a :class:`ConfigError` naming the config field and listing the known
names, which is what a user who mistyped a name needs to see.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from dicelab.errors import ConfigError

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    """Entries by name, in registration order. ``field`` is the config field that selects one."""

    def __init__(self, kind: str, field: str) -> None:
        self.kind, self.field = kind, field
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def names(self) -> list[str]:
        return list(self._entries)

    def check(self, name: str) -> str:
        """``name`` if registered, else a ValueError listing the known names (for pydantic validators)."""
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r} (known: {', '.join(self._entries)})")
        return name

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(f"{self.field}: unknown {self.kind} {name!r} (known: {', '.join(self._entries)})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[T]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)
