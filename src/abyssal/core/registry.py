"""One registry mechanism for every extension point (solutions, models, exporters, ...)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from abyssal.core.errors import MissingDependencyError, RegistryError

T = TypeVar("T")


@dataclass(frozen=True)
class _LazyEntry:
    target: str
    extra: str | None


class Registry(Generic[T]):
    """A name -> object table with clear errors.

    Entries may be registered eagerly (``add``) or lazily by import path (``add_lazy``), so that
    listing names and summaries never imports heavy code. A lazy entry whose import fails stays
    registered: every ``get`` retries and raises :class:`MissingDependencyError` naming the extra.

    Args:
        kind: what the entries are, used in messages (``"solution"``).

    Example:
        >>> models = Registry("model")
        >>> models.add("mlp", dict, summary="a multi-layer perceptron")
        >>> models.get("mlp") is dict, models.summary("mlp")
        (True, 'a multi-layer perceptron')
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._lazy: dict[str, _LazyEntry] = {}
        self._summaries: dict[str, str] = {}

    def add(self, name: str, obj: T, *, summary: str = "") -> T:
        """Register ``obj`` under ``name``; a name already taken is an error."""
        self._check_new(name)
        self._entries[name] = obj
        self._summaries[name] = summary
        return obj

    def add_lazy(
        self, name: str, target: str, *, extra: str | None = None, summary: str = ""
    ) -> None:
        """Register ``"package.module:attribute"`` under ``name``, imported on first ``get``.

        Args:
            name: the registry name.
            target: ``"module:attribute"``.
            extra: the abyssal extra that installs the target's optional libraries, named in the
                error when importing it fails (``pip install 'abyssal[EXTRA]'``).
            summary: one line for listings, available without importing.

        Example:
            >>> SOLUTIONS.add_lazy("fraud", "abyssal.solutions.fraud.solution:FraudSolution",
            ...                    extra="fraud", summary="transaction-graph fraud detection")
        """
        if ":" not in target:
            raise RegistryError(
                f"lazy {self.kind} '{name}': target '{target}' is not 'module:attr'"
            )
        self._check_new(name)
        self._lazy[name] = _LazyEntry(target, extra)
        self._summaries[name] = summary

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def wrap(obj: T) -> T:
            return self.add(name, obj)

        return wrap

    def get(self, name: str) -> T:
        """Return the entry for ``name``, importing a lazy one on first use.

        Raises:
            RegistryError: an unknown name (the choices are listed).
            MissingDependencyError: a lazy entry's import failed; the message names the entry and
                the extra to install (or the missing module when no extra was given).
        """
        if name in self._entries:
            return self._entries[name]
        if name in self._lazy:
            obj = self._import(name, self._lazy[name])
            self._entries[name] = obj
            del self._lazy[name]
            return obj
        raise self._unknown(name)

    def summary(self, name: str) -> str:
        """The one-line summary given at registration (``""`` if none); imports nothing.

        Example:
            >>> SOLUTIONS.summary("fraud")
            'transaction-graph fraud detection: ...'
        """
        if name not in self:
            raise self._unknown(name)
        return self._summaries.get(name, "")

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted({*self._entries, *self._lazy})

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def _import(self, name: str, entry: _LazyEntry) -> T:
        module, attr = entry.target.split(":")
        try:
            loaded = importlib.import_module(module)
        except ImportError as exc:
            missing = getattr(exc, "name", None) or module
            fix = (
                f"pip install 'abyssal[{entry.extra}]'"
                if entry.extra
                else f"install the module '{missing}'"
            )
            raise MissingDependencyError(
                f"{self.kind} '{name}' needs a library that is not installed: {fix} ({exc})"
            ) from exc
        if not hasattr(loaded, attr):
            raise RegistryError(
                f"{self.kind} '{name}' is registered as '{entry.target}', but module '{module}' "
                f"has no attribute '{attr}'"
            )
        return getattr(loaded, attr)

    def _unknown(self, name: str) -> RegistryError:
        choices = ", ".join(self.names()) or "(none registered)"
        return RegistryError(f"unknown {self.kind} '{name}'; choose one of: {choices}")

    def _check_new(self, name: str) -> None:
        if not name or not isinstance(name, str):
            raise RegistryError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if name in self._entries or name in self._lazy:
            raise RegistryError(f"{self.kind} '{name}' is already registered")
