"""One registry of named parts (backbones, networks, pseudo-labellers, normalisations, losses, recipes).

Each kind of plug-in keeps a :class:`Registry`: ``register(name, **info)`` as a decorator, ``names(pattern)``
in natural order (``resnet18 < resnet34 < resnet101``), and ``get(name)``, whose error for an
unknown name lists the registered ones, the closest match and how to register your own.

A part declares at registration what the code that uses it needs to know (a backbone its input
size, a pseudo-labeller its settings class, a recipe its place in chapter 07): ``info(name)`` gives
that declaration back as the registry's record type, its defaults filled in, and ``where(**values)``
the parts whose declaration matches, so that consumers ask the registry instead of naming parts.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import re
from typing import Any, Callable, Generic, Iterable, Optional, TypeVar

from .errors import InvalidInputError, UnknownNameError

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
        info: the frozen dataclass a part's declaration is kept as (its fields are what
            ``register`` takes besides the name, with their defaults); None: parts declare nothing.
    """

    def __init__(self, kind: str, hint: str = "", info: Optional[type] = None) -> None:
        self.kind, self.hint, self.info_type = kind, hint, info
        self._items: dict[str, T] = {}
        self._info: dict[str, Any] = {}

    def register(self, name: str, **info: Any) -> Callable[[T], T]:
        """Decorator that registers its argument under ``name`` (a later one replaces it), with what
        the part declares (``info``: fields of the registry's record type).

        Raises:
            InvalidInputError: ``info`` names a field the record type does not have.
        """
        record = self._record(name, info)

        def deco(item: T) -> T:
            self._items[name] = item
            self._info[name] = record
            return item

        return deco

    def _record(self, name: str, info: dict) -> Any:
        if self.info_type is None:
            if info:
                raise InvalidInputError(f"a {self.kind} declares nothing at registration; register {name!r} "
                                        f"without {', '.join(sorted(info))}")
            return None
        known = [f.name for f in dataclasses.fields(self.info_type)]
        unknown = sorted(set(info) - set(known))
        if unknown:
            raise InvalidInputError(f"{self.kind} {name!r} declares {', '.join(unknown)}, which a {self.kind} cannot "
                                    f"declare{did_you_mean(unknown[0], known)} Valid: {', '.join(known)}")
        return self.info_type(**info)

    def info(self, name: str) -> Any:
        """What the part ``name`` declared at registration (the record type's defaults for the rest).

        Raises:
            UnknownNameError: as :meth:`get`.
        """
        self.get(name)
        return self._info[name]

    def where(self, **values: Any) -> list[str]:
        """The parts whose declaration has these ``values``, in the order they were registered."""
        return [n for n, record in self._info.items()
                if record is not None and all(getattr(record, k) == v for k, v in values.items())]

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
        self._info.pop(name, None)
        return self._items.pop(name)
