"""One registry of named parts (backbones, networks, pseudo-labellers, normalisations, losses, recipes).

Each kind of plug-in keeps a :class:`Registry`: ``register(name)`` as a decorator, ``names(pattern)``
in natural order (``resnet18 < resnet34 < resnet101``), and ``get(name)``, whose error for an
unknown name lists the registered ones, the closest match and how to register your own.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from typing import Callable, Generic, Iterable, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")


def natural_key(name: str) -> list:
    """Sort key that orders digit runs as numbers: resnet18 < resnet34 < resnet101 < vit_small."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def did_you_mean(name: object, names: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``names``, or ``""``."""
    close = difflib.get_close_matches(str(name), list(names), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


class Registry(Generic[T]):
    """Named parts of one kind.

    Args:
        kind: how messages name the kind ("backbone", "pseudo-labeller" ...).
        hint: what an unknown-name error adds (e.g. how to register one).
    """

    def __init__(self, kind: str, hint: str = "") -> None:
        self.kind, self.hint = kind, hint
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers its argument under ``name`` (a later one replaces it)."""

        def deco(item: T) -> T:
            self._items[name] = item
            return item

        return deco

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching ``pattern`` (shell-style), in natural order."""
        return sorted((n for n in self._items if fnmatch.fnmatchcase(n, pattern)), key=natural_key)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def get(self, name: str) -> T:
        """The part ``name``.

        Raises:
            UnknownNameError: names the registered parts and the closest one.
        """
        if name not in self._items:
            names = self.names()
            hint = f" {self.hint}" if self.hint else ""
            raise UnknownNameError(f"unknown {self.kind} {name!r}{did_you_mean(name, names)} "
                                   f"Valid names: {', '.join(names)}.{hint}")
        return self._items[name]

    def pop(self, name: str) -> T:
        """Remove and return ``name`` (tests that register a part for themselves)."""
        return self._items.pop(name)
