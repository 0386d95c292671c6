"""Model version records: the immutable metadata of a stored model, and the checks and
comparisons the store applies to it. Pure data; the store in :mod:`abyssal.core.store` persists it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any

from abyssal.core.artifacts import ArtifactRecord, ExternalBase
from abyssal.core.errors import StoreError

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
ALIAS_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
LATEST = "latest"


@dataclasses.dataclass(frozen=True)
class ModelVersion:
    """One immutable model version, as read from the store.

    Args:
        name: the model name (``fraud-gnn``).
        version: 1, 2, ... per name, in registration order.
        solution: the solution that built the model.
        created_at: ISO-8601 UTC time of registration.
        config: the resolved config, as saved.
        metrics: scalar metrics, as saved.
        lineage: code lineage merged with the caller's (``data_fingerprint``, ``parent``, ...).
        run_id: the run that produced it, if any.
        artifacts: its typed, content-addressed files, sorted by name.
        base: what it builds on: ``None``, a pinned ``"name:version"`` ref, or an
            :class:`~abyssal.core.artifacts.ExternalBase`.
        aliases: the aliases pointing at this version when it was read.

    Example:
        >>> mv = store.resolve("fraud-gnn:production")
        >>> mv.ref, [a.name for a in mv.artifacts]
        ('fraud-gnn:3', ['model.safetensors'])
    """

    name: str
    version: int
    solution: str
    created_at: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    run_id: str | None
    artifacts: tuple[ArtifactRecord, ...] = ()
    base: str | ExternalBase | None = None
    aliases: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        """``"name:version"``, the reference that always means this version."""
        return f"{self.name}:{self.version}"

    @property
    def weights(self) -> ArtifactRecord | None:
        """The version's own ``weights`` artifact (there is at most one), or ``None``."""
        return next((a for a in self.artifacts if a.role == "weights"), None)

    @property
    def weights_sha256(self) -> str | None:
        """SHA-256 of the weights artifact, or ``None`` when the version has none."""
        return None if self.weights is None else self.weights.sha256

    def artifact(self, name: str) -> ArtifactRecord:
        """The artifact called ``name``; an unknown name lists the version's artifacts.

        Example:
            >>> store.resolve("text-lora").artifact("adapter_config.json").role  # doctest: +SKIP
            'aux'
        """
        for record in self.artifacts:
            if record.name == name:
                return record
        names = ", ".join(a.name for a in self.artifacts) or "(none)"
        raise StoreError(f"{self.ref} has no artifact '{name}'; its artifacts: {names}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of all fields plus ``ref`` and ``weights_sha256``."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["artifacts"] = [a.to_dict() for a in self.artifacts]
        out["base"] = self.base.to_dict() if isinstance(self.base, ExternalBase) else self.base
        out["aliases"] = list(self.aliases)
        out["ref"] = self.ref
        out["weights_sha256"] = self.weights_sha256
        return out


@dataclasses.dataclass(frozen=True)
class AliasMove:
    """One alias change: set (``old_version`` None), moved, or removed (``new_version`` None).

    ``changed_at`` is ISO-8601 UTC; ``changed_by`` is ``user@host``.
    """

    name: str
    alias: str
    old_version: int | None
    new_version: int | None
    changed_at: str
    changed_by: str


def check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise StoreError(
            f"bad model name {name!r}: use 1-64 characters from A-Z a-z 0-9 _ . -, "
            "starting with a letter or digit"
        )


def check_alias(alias: str) -> None:
    if not isinstance(alias, str) or not ALIAS_RE.fullmatch(alias) or alias == LATEST:
        raise StoreError(
            f"bad alias {alias!r}: use 1-64 characters from A-Z a-z 0-9 _ -, starting with a "
            f"letter; '{LATEST}' and version numbers are reserved"
        )


def check_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics as plain finite scalars; 0-d tensors and numpy scalars are unwrapped."""
    if not isinstance(metrics, dict):
        raise StoreError(f"metrics must be a dict, got {type(metrics).__name__}")
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if not isinstance(key, str):
            raise StoreError(f"metric name {key!r} is not a string")
        if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
            value = value.item()
        if not isinstance(value, bool | int | float | str | type(None)):
            raise StoreError(f"metric '{key}' must be a number, bool, str or None, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise StoreError(f"metric '{key}' is {value}; metrics must be finite")
        out[key] = value
    return out


def to_json(value: Any, what: str) -> str:
    if not isinstance(value, dict):
        raise StoreError(f"{what} must be a dict, got {type(value).__name__}")
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what} is not JSON-serialisable: {exc}") from None


def metric_deltas(a: dict[str, Any], b: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for key in sorted({*a, *b}):
        va, vb = a.get(key), b.get(key)
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (va, vb))
        out[key] = {"a": va, "b": vb, "delta": vb - va if numeric else None}
    return out


def config_changes(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    flat_a, flat_b = flatten(a), flatten(b)
    keys = sorted({*flat_a, *flat_b})
    return {k: (flat_a.get(k), flat_b.get(k)) for k in keys if flat_a.get(k) != flat_b.get(k)}


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay leaves."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``"name:sel"`` -> ``(name, sel)``; ``"name"`` -> ``(name, None)``."""
    if not isinstance(ref, str) or not ref:
        raise StoreError(f"a model ref must be 'name', 'name:version' or 'name:alias', got {ref!r}")
    name, _, selector = ref.partition(":")
    if ":" in ref and not selector:
        raise StoreError(f"model ref '{ref}' ends with ':'; add a version, alias or 'latest'")
    check_name(name)
    return name, selector if ":" in ref else None


def encode_base(base: str | ExternalBase | None) -> str | None:
    """The ``versions.base`` column: ``NULL``, a ``"name:version"`` ref, or a JSON object."""
    if isinstance(base, ExternalBase):
        return json.dumps(base.to_dict(), sort_keys=True)
    return base


def decode_base(text: str | None) -> str | ExternalBase | None:
    """Read back :func:`encode_base` (model names cannot start with ``{``)."""
    if not text:
        return None
    if text.startswith("{"):
        return ExternalBase.from_dict(json.loads(text))
    return text


def artifact_from_row(row: tuple) -> ArtifactRecord:
    """An :class:`ArtifactRecord` from ``artifact, role, format, sha256, size, meta`` columns."""
    name, role, fmt, sha256, size, meta = row
    return ArtifactRecord(name, role, fmt, sha256, size, json.loads(meta))


def version_from_row(
    row: tuple, artifacts: list[ArtifactRecord], aliases: list[str]
) -> ModelVersion:
    """A :class:`ModelVersion` from the ``versions`` columns that the store selects."""
    name, version, solution, created_at, config, metrics, lineage, run_id, base = row
    return ModelVersion(
        name=name,
        version=version,
        solution=solution,
        created_at=created_at,
        config=json.loads(config),
        metrics=json.loads(metrics),
        lineage=json.loads(lineage),
        run_id=run_id,
        artifacts=tuple(sorted(artifacts, key=lambda a: a.name)),
        base=decode_base(base),
        aliases=tuple(aliases),
    )
