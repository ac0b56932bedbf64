"""One registry helper for everything the library builds by name (timm-style).

A :class:`Registry` maps names to entries of one kind (attacks, mask sources, criteria, models,
datasets, LRP composites): ``register`` adds one (as a decorator or a call), ``get`` returns it
or raises :class:`UnknownNameError` listing the known names, ``names`` lists them in
registration order. A registry may also *resolve* names it does not hold, by prefix
(``torchattacks:APGD``): a resolver turns such a name into an entry on demand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from c2f_attacks.errors import UserError

T = TypeVar("T")


class UnknownNameError(UserError):
    """A name that no registry entry (or resolver) answers to."""


class Registry(Generic[T]):
    """Names -> entries of one ``kind`` ("attack", "mask source", ...)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._resolvers: dict[str, tuple[Callable[[str], T], Callable[[], list[str]]]] = {}

    def register(self, name: str, entry: T | None = None):
        """``register(name, entry)`` adds ``entry``; ``@register(name)`` decorates it."""
        if not isinstance(name, str) or not name or ":" in name:
            raise ValueError(f"{self.kind} name must be a non-empty string without ':', "
                             f"got {name!r}")  # fmt: skip
        if entry is None:
            return lambda e: self.register(name, e)
        if name in self._entries:
            raise ValueError(f"{self.kind} name {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def add_resolver(
        self, prefix: str, resolve: Callable[[str], T], names: Callable[[], list[str]]
    ) -> None:
        """Names ``"<prefix>:<rest>"`` are built by ``resolve(rest)``; ``names()`` lists the
        ``rest`` values it knows (an empty list when its library is not installed)."""
        if prefix in self._resolvers or not prefix.isidentifier():
            raise ValueError(f"{self.kind} resolver prefix {prefix!r} is taken or not a name")
        self._resolvers[prefix] = (resolve, names)

    def get(self, name: str) -> T:
        if isinstance(name, str) and name in self._entries:
            return self._entries[name]
        if isinstance(name, str) and ":" in name:
            prefix, rest = name.split(":", 1)
            if prefix in self._resolvers and rest:
                return self._resolvers[prefix][0](rest)
        known = ", ".join([*self._entries, *(f"{p}:NAME" for p in self._resolvers)])
        raise UnknownNameError(f"unknown {self.kind} {name!r}; choose from {known}")

    def names(self, resolved: bool = False) -> list[str]:
        """The registered names in registration order; with ``resolved``, followed by every
        name the resolvers know (``prefix:NAME``)."""
        names = list(self._entries)
        if resolved:
            for prefix, (_, known) in self._resolvers.items():
                names += [f"{prefix}:{rest}" for rest in known()]
        return names

    def __contains__(self, name: object) -> bool:
        try:
            self.get(name)  # type: ignore[arg-type]
        except UnknownNameError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
