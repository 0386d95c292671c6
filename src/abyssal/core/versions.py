"""Model version records: the immutable metadata of a stored model, and the checks and
comparisons the store applies to it. Pure data; the store in :mod:`abyssal.core.store` persists it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import TYPE_CHECKING, Any

from abyssal.core.errors import StoreError

if TYPE_CHECKING:
    import torch

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
        weights_sha256: SHA-256 of the safetensors file.
        config: the resolved config, as saved.
        metrics: scalar metrics, as saved.
        lineage: code lineage merged with the caller's (``data_fingerprint``, ``parent``, ...).
        run_id: the run that produced it, if any.
        aliases: the aliases pointing at this version when it was read.

    Example:
        >>> store.resolve("fraud-gnn:production").ref
        'fraud-gnn:3'
    """

    name: str
    version: int
    solution: str
    created_at: str
    weights_sha256: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    run_id: str | None
    aliases: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        """``"name:version"``, the reference that always means this version."""
        return f"{self.name}:{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of all fields plus ``ref``."""
        out = dataclasses.asdict(self)
        out["aliases"] = list(self.aliases)
        out["ref"] = self.ref
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


def contiguous_cpu(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each tensor copied to its own contiguous CPU memory (safetensors refuses shared storage)."""
    import torch

    if not isinstance(state_dict, dict) or not state_dict:
        raise StoreError("state_dict must be a non-empty dict of parameter name -> tensor")
    out = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise StoreError(f"state_dict key {key!r} is not a string")
        if not isinstance(value, torch.Tensor):
            raise StoreError(f"state_dict['{key}'] is a {type(value).__name__}, not a tensor")
        if value.layout != torch.strided or value.is_meta:
            raise StoreError(f"state_dict['{key}'] must be a dense tensor with data")
        out[key] = value.detach().to("cpu", memory_format=torch.contiguous_format, copy=True)
    return out


def serialise(tensors: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    try:
        return save(tensors)
    except Exception as exc:  # safetensors raises several types for unsupported tensors
        raise StoreError(f"cannot serialise the state dict to safetensors: {exc}") from exc


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


def version_from_row(row: tuple, aliases: list[str]) -> ModelVersion:
    name, version, solution, created_at, sha, config, metrics, lineage, run_id = row
    return ModelVersion(
        name=name,
        version=version,
        solution=solution,
        created_at=created_at,
        weights_sha256=sha,
        config=json.loads(config),
        metrics=json.loads(metrics),
        lineage=json.loads(lineage),
        run_id=run_id,
        aliases=tuple(aliases),
    )
