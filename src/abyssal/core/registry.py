"""One registry mechanism for every extension point (solutions, models, exporters, ...)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from abyssal.core.errors import RegistryError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object table with clear errors.

    Entries may be registered eagerly (``add``) or lazily by import path (``add_lazy``), so that
    listing names never imports heavy code.

    Args:
        kind: what the entries are, used in messages (``"solution"``).

    Example:
        >>> models = Registry("model")
        >>> models.add("mlp", dict)
        >>> models.get("mlp") is dict
        True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._lazy: dict[str, str] = {}

    def add(self, name: str, obj: T) -> T:
        """Register ``obj`` under ``name``; a name already taken is an error."""
        self._check_new(name)
        self._entries[name] = obj
        return obj

    def add_lazy(self, name: str, target: str) -> None:
        """Register ``"package.module:attribute"`` under ``name``, imported on first ``get``."""
        if ":" not in target:
            raise RegistryError(
                f"lazy {self.kind} '{name}': target '{target}' is not 'module:attr'"
            )
        self._check_new(name)
        self._lazy[name] = target

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def wrap(obj: T) -> T:
            return self.add(name, obj)

        return wrap

    def get(self, name: str) -> T:
        """Return the entry for ``name``; an unknown name lists the choices."""
        if name in self._entries:
            return self._entries[name]
        if name in self._lazy:
            import importlib

            module, attr = self._lazy.pop(name).split(":")
            obj = getattr(importlib.import_module(module), attr)
            self._entries[name] = obj
            return obj
        choices = ", ".join(self.names()) or "(none registered)"
        raise RegistryError(f"unknown {self.kind} '{name}'; choose one of: {choices}")

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted({*self._entries, *self._lazy})

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def _check_new(self, name: str) -> None:
        if not name or not isinstance(name, str):
            raise RegistryError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if name in self._entries or name in self._lazy:
            raise RegistryError(f"{self.kind} '{name}' is already registered")
