"""One registry mechanism for every extension point (solutions, models, exporters, ...).

A registry made with an entry-point ``group`` (``Registry("solution", group="abyssal.solutions")``)
also holds the entries installed packages declare in that group::

    [project.entry-points."abyssal.solutions"]
    claims = "acme_claims.solution:ClaimsSolution"

They are found on first use without importing them (names, the package and its version come
from the package's metadata), and imported on ``get`` like any lazy entry. A plugin whose import
fails raises an error naming the plugin and its package; two packages (or a package and abyssal)
claiming one name make that name an error naming both, while every other entry keeps working.
"""

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
    package: str | None = None  # the installed distribution of a plugin
    version: str | None = None


@dataclass(frozen=True)
class Plugin:
    """An entry an installed package declares: its registry kind and name, the package and
    version, and the ``module:attribute`` it points at."""

    kind: str
    name: str
    package: str
    version: str
    target: str
    group: str


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

    def __init__(self, kind: str, group: str | None = None) -> None:
        self.kind = kind
        self.group = group
        self._entries: dict[str, T] = {}
        self._lazy: dict[str, _LazyEntry] = {}
        self._summaries: dict[str, str] = {}
        self._plugins: dict[str, Plugin] | None = None  # found on first use
        self._conflicts: dict[str, str] = {}  # name -> what claims it

    def plugins(self) -> list[Plugin]:
        """The entries installed packages declare in this registry's group (none imported)."""
        self._discover()
        return sorted(self._plugins.values(), key=lambda p: p.name) if self._plugins else []

    def conflicts(self) -> dict[str, str]:
        """Names claimed twice (by two packages, or by a package and abyssal) and by whom."""
        self._discover()
        return dict(self._conflicts)

    def origin(self, name: str) -> Plugin | None:
        """The plugin that provides ``name``, or ``None`` for abyssal's own entries."""
        self._discover()
        return (self._plugins or {}).get(name)

    def _discover(self) -> None:
        if self._plugins is not None or self.group is None:
            return
        from importlib.metadata import entry_points

        self._plugins = {}
        claims: dict[str, list[str]] = {}
        for ep in entry_points(group=self.group):
            dist = getattr(ep, "dist", None)
            package = dist.metadata["Name"] if dist is not None else "an unknown package"
            version = dist.version if dist is not None else "?"
            claims.setdefault(ep.name, []).append(f"{package} {version}")
            if ep.name in self._plugins or ep.name in self._entries or ep.name in self._lazy:
                continue
            self._plugins[ep.name] = Plugin(
                self.kind, ep.name, package, version, ep.value, self.group
            )
        for name, owners in claims.items():
            builtin = name in self._entries or name in self._lazy
            if builtin or len(owners) > 1:
                who = ["abyssal"] * builtin + owners
                self._conflicts[name] = " and ".join(who)
                self._plugins.pop(name, None)
        for plugin in self._plugins.values():
            if ":" not in plugin.target:
                self._conflicts[plugin.name] = (
                    f"{plugin.package} {plugin.version} (its entry point '{plugin.target}' is "
                    "not 'module:attribute')"
                )
                continue
            self._lazy[plugin.name] = _LazyEntry(
                plugin.target, None, plugin.package, plugin.version
            )
            self._summaries[plugin.name] = _package_summary(plugin.package)
        for name in self._conflicts:
            self._plugins.pop(name, None)

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
        self._discover()
        if name in self._conflicts:
            raise RegistryError(
                f"{self.kind} '{name}' is claimed by {self._conflicts[name]}: uninstall one, "
                "or rename its entry point"
            )
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
        """All registered names, sorted (plugins included)."""
        self._discover()
        return sorted({*self._entries, *self._lazy})

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._entries or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def _import(self, name: str, entry: _LazyEntry) -> T:
        module, attr = entry.target.split(":")
        if entry.package is not None:  # a plugin: any failure names it and its package
            try:
                loaded = importlib.import_module(module)
                return getattr(loaded, attr.strip())
            except Exception as exc:
                raise RegistryError(
                    f"{self.kind} '{name}' from the plugin package {entry.package} "
                    f"{entry.version} ('{entry.target}') failed to load: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
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
        plugin = (self._plugins or {}).pop(name, None)
        if plugin is not None:  # abyssal registers a name a plugin already took: both lose it
            self._conflicts[name] = f"abyssal and {plugin.package} {plugin.version}"
            del self._lazy[name]
            return
        if name in self._entries or name in self._lazy:
            raise RegistryError(f"{self.kind} '{name}' is already registered")


def _package_summary(package: str) -> str:
    """A plugin package's one-line summary from its metadata (nothing imported)."""
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        return f"{metadata(package).get('Summary') or ''} (plugin: {package})".strip()
    except PackageNotFoundError:
        return f"(plugin: {package})"
