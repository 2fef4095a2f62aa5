"""One generic registry: register by name, lazy "module:attr" entries, "did you mean" errors."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Generic, TypeVar

from archlab.errors import ArchlabError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of objects (classes, functions, configs).

    Entries may be registered eagerly with the decorator or lazily as a ``"module:attr"`` string, so
    optional heavy backends are imported only when asked for.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T | str] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, obj: T | str | None = None, *, help: str | None = None):
        """Register ``obj`` under ``name``; without ``obj``, return a decorator."""

        def add(target: T | str) -> T | str:
            if name in self._entries and self._entries[name] is not target:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._entries[name] = target
            doc = help or (None if isinstance(target, str) else (getattr(target, "__doc__", None) or ""))
            self._help[name] = (doc or "").strip().splitlines()[0] if (doc or "").strip() else ""
            return target

        if obj is not None:
            add(obj)
            return obj
        return add

    def get(self, name: str) -> T:
        if name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "none"
            raise ArchlabError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, self._entries)}; known: {known}"
            )
        entry = self._entries[name]
        if isinstance(entry, str):
            module_name, _, attr = entry.partition(":")
            entry = getattr(importlib.import_module(module_name), attr)
            self._entries[name] = entry
        return entry  # type: ignore[return-value]

    def describe(self, name: str) -> str:
        return self._help.get(name, "")

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def names(self) -> list[str]:
        return sorted(self._entries)

