"""One config system: dataclasses, YAML files that mirror them, and ``key=value`` overrides.

A config class is a plain (possibly nested) dataclass. Each field may carry help text in
``field(metadata={"help": ...})`` and the class may validate itself in ``__post_init__`` by raising
:class:`~abyssal.core.errors.ConfigError`. Unknown keys are errors that list the valid ones. A
field that names a file or folder is marked ``field(..., path=True)``; :func:`resolve_paths` makes
such values absolute, so a stored config still finds its data from another working directory.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Train:
    ...     epochs: int = 10
    ...     lr: float = 1e-3
    >>> cfg = load_config(Train, overrides=["epochs=3"])
    >>> cfg.epochs
    3
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from abyssal.core.atomic import write_text_atomic
from abyssal.core.errors import ConfigError

C = TypeVar("C")


def field(
    default: Any = dataclasses.MISSING, *, help: str = "", path: bool = False, **kwargs: Any
) -> Any:
    """``dataclasses.field`` with a ``help`` text kept in the metadata.

    Args:
        default: the default value.
        help: what the field means, shown by ``abyssal config``.
        path: the field names a file or folder (``metadata["path"]``): :func:`resolve_paths`
            makes it absolute.
        **kwargs: passed on to ``dataclasses.field`` (``default_factory``, ...).

    Example:
        >>> @dataclasses.dataclass
        ... class Data:
        ...     path: str | None = field(None, help="the table", path=True)
        >>> dataclasses.fields(Data)[0].metadata["path"]
        True
    """
    if default is not dataclasses.MISSING:
        kwargs["default"] = default
    metadata = {"help": help, "path": True} if path else {"help": help}
    return dataclasses.field(metadata=metadata, **kwargs)


def path_values(cfg: Any, prefix: str = "") -> dict[str, str]:
    """Every path field (``field(..., path=True)``) of a config that is set, by dotted key.

    Nested sections are searched too; empty values and ``None`` are left out.

    Example:
        >>> path_values(TabularConfig(data=TabularDataConfig(source="file", path="t.csv",
        ...     target="y")))  # doctest: +SKIP
        {'data.path': 't.csv'}
    """
    found: dict[str, str] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            found.update(path_values(value, f"{prefix}{f.name}."))
        elif f.metadata.get("path") and isinstance(value, str) and value:
            found[f"{prefix}{f.name}"] = value
    return found


def resolve_paths(cfg: C, base: str | Path | None = None) -> C:
    """A copy of ``cfg`` whose path fields (nested sections too) are absolute.

    A relative path is joined to ``base`` (the working directory by default) and normalised;
    ``~`` is expanded; URLs (``scheme://...``) are kept as they are. Symbolic links are not
    followed, so the path still says what the user named.

    Args:
        cfg: a config dataclass instance.
        base: the folder relative paths are relative to.

    Returns:
        A new config (or ``cfg`` itself when nothing changes); validated again.

    Example:
        >>> resolve_paths(cfg, "/home/ana/project").data.path  # doctest: +SKIP
        '/home/ana/project/data/train.csv'
    """
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            resolved = resolve_paths(value, base)
            if resolved is not value:
                changes[f.name] = resolved
        elif f.metadata.get("path") and isinstance(value, str) and value and "://" not in value:
            absolute = os.path.abspath(os.path.join(base or os.getcwd(), os.path.expanduser(value)))
            if absolute != value:
                changes[f.name] = absolute
    return dataclasses.replace(cfg, **changes) if changes else cfg


def config_from_dict(cls: type[C], data: dict[str, Any] | None, *, where: str = "config") -> C:
    """Build a config dataclass from a mapping, checking keys and value types.

    Args:
        cls: the dataclass type.
        data: the mapping (from YAML or JSON); ``None`` means all defaults.
        where: dotted path used in messages.

    Returns:
        An instance of ``cls``.

    Raises:
        ConfigError: an unknown key (valid keys are listed), a value of the wrong type, or a failed
            validation in ``__post_init__``.
    """
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where}: expected a mapping of keys to values, got {type(data).__name__}"
        )
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}; "
            f"valid keys are: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {
        name: _coerce(_with_field_defaults(fields[name], value), hints[name], f"{where}.{name}")
        for name, value in data.items()
    }
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The plain-dict form of a config dataclass (what YAML and JSON hold)."""
    return dataclasses.asdict(cfg)


def apply_overrides(
    cls: type, data: dict[str, Any], overrides: list[str], *, where: str = "config"
) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides to a config mapping, checking each key against ``cls``.

    Values are parsed as YAML scalars or flow collections (``3``, ``1e-3``, ``true``, ``[1, 2]``).
    """
    out = _deep_copy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        key, raw = item.split("=", 1)
        path = key.strip().split(".")
        _check_path(cls, path, where)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override '{item}': value is not valid YAML ({exc})") from None
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = value
    return out


def read_yaml_mapping(path: str | Path, *, what: str = "file") -> dict[str, Any]:
    """A YAML file whose top level is a mapping (an empty file is ``{}``); a missing file, bad
    YAML or another top level is a ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} '{path}' does not exist")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return loaded or {}


def load_config(
    cls: type[C], path: str | Path | None = None, overrides: list[str] | None = None
) -> C:
    """Load a config from an optional YAML file plus ``key=value`` overrides.

    Args:
        cls: the config dataclass.
        path: a YAML file mirroring ``cls``; ``None`` starts from the defaults.
        overrides: ``dotted.key=value`` strings applied after the file.

    Returns:
        The validated config.
    """
    data: dict[str, Any] = {}
    where = "config"
    if path is not None:
        where = str(path)
        data = read_yaml_mapping(path, what="config file")
    data = apply_overrides(cls, data, overrides or [], where=where)
    return config_from_dict(cls, data, where=where)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write ``cfg`` as YAML, atomically (a temporary file renamed into place)."""
    write_text_atomic(Path(path), yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def config_help(cls: type, prefix: str = "", default: Any = None) -> list[tuple[str, str, str]]:
    """``(dotted key, default, help)`` for every leaf field of a config class.

    Defaults are read from a default instance, so a nested section shows the values its parent
    gives it (which may differ from the nested class's own defaults).
    """
    rows: list[tuple[str, str, str]] = []
    hints = typing.get_type_hints(cls)
    if default is None:
        try:
            default = cls()
        except TypeError:  # a class with required fields: fall back to per-field defaults
            default = None
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        value = getattr(default, f.name, dataclasses.MISSING)
        if dataclasses.is_dataclass(hints[f.name]):
            nested = None if value is dataclasses.MISSING else value
            rows.extend(config_help(hints[f.name], prefix=f"{key}.", default=nested))
            continue
        if value is not dataclasses.MISSING:
            shown = repr(value)
        elif f.default is not dataclasses.MISSING:
            shown = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            shown = repr(f.default_factory())
        else:
            shown = "(required)"
        rows.append((key, shown, f.metadata.get("help", "")))
    return rows


def _check_path(cls: type, path: list[str], where: str) -> None:
    current: Any = cls
    for depth, part in enumerate(path):
        if not dataclasses.is_dataclass(current):
            raise ConfigError(f"{where}: '{'.'.join(path[:depth])}' has no sub-keys")
        names = [f.name for f in dataclasses.fields(current) if f.init]
        if part not in names:
            shown = ".".join(path[: depth + 1])
            raise ConfigError(f"{where}: unknown key '{shown}'; valid keys are: {', '.join(names)}")
        current = typing.get_type_hints(current)[part]


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return config_from_dict(hint, value, where=where)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: got None")
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = get_args(hint)[:1] or (Any,)
        items = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    return _coerce_scalar(value, hint, where)


def _coerce_scalar(value: Any, hint: Any, where: str) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _with_field_defaults(f: dataclasses.Field, value: Any) -> Any:
    """A partial mapping for a nested config field starts from that field's own default (which may
    differ from the nested class's defaults), so ``train.epochs=5`` keeps the other train keys."""
    if value is not None and not isinstance(value, dict):
        return value
    if f.default_factory is dataclasses.MISSING:
        return value
    default = f.default_factory()
    if not dataclasses.is_dataclass(default):
        return value
    # an empty YAML section (``train:`` with every key commented out) means "the defaults"
    return _deep_merge(config_to_dict(default), value or {})


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _deep_merge(out[key], value) if both else value
    return out


def _deep_copy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in data.items()}
