"""API keys for the service: stored hashed, checked in constant time, each with the models it may
call and a rate limit.

A keys file is JSON: ``{"keys": [{"name": "bank-a", "sha256": "<hex digest of the key>",
"models": ["text", "defect"], "rate_per_s": 50, "burst": 100}, ...]}``; ``"models": ["*"]``
allows every model, and a missing ``rate_per_s`` means no limit. :func:`new_key` makes a key
and its entry (the key itself is shown once and never stored). Clients send the key in the
``X-API-Key`` header (or ``Authorization: Bearer KEY``). Logs name the key's ``name``, never
the key.

Example:
    >>> key, entry = new_key("bank-a", models=["text"], rate_per_s=5)
    >>> keys = KeyRing([entry])
    >>> keys.check(key, "text").name
    'bank-a'
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abyssal.core.errors import AbyssalError, ConfigError


class AuthError(AbyssalError):
    """A request's key is missing or unknown (401), may not use the model (403), or is over
    its rate (429, with ``retry_after`` seconds)."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


def hash_key(key: str) -> str:
    """The stored form of a key: its SHA-256 hex digest."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(
    name: str,
    *,
    models: Sequence[str] = ("*",),
    rate_per_s: float | None = None,
    burst: int | None = None,
) -> tuple[str, dict[str, Any]]:
    """A fresh random key (``ak_`` and 43 URL-safe characters) and its keys-file entry."""
    key = "ak_" + secrets.token_urlsafe(32)
    entry: dict[str, Any] = {"name": name, "sha256": hash_key(key), "models": list(models)}
    if rate_per_s is not None:
        entry["rate_per_s"] = rate_per_s
        entry["burst"] = burst if burst is not None else max(1, math.ceil(rate_per_s))
    return key, entry


@dataclass
class ApiKey:
    """One key's entry (its digest, never the key)."""

    name: str
    sha256: str
    models: tuple[str, ...]
    rate_per_s: float | None = None
    burst: int = 1
    tokens: float = field(default=0.0, repr=False)
    stamp: float = field(default=0.0, repr=False)

    def may_use(self, model: str) -> bool:
        return "*" in self.models or model in self.models


class KeyRing:
    """The keys a service accepts.

    Args:
        entries: keys-file entries (see the module docstring).
        clock: seconds, monotonic (tests pass their own).

    Raises:
        ConfigError: an entry without a name or a 64-hex-digit ``sha256``, a non-positive rate
            or burst, or two entries with one name or one digest.
    """

    def __init__(
        self, entries: Sequence[Mapping[str, Any]], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.clock = clock
        self._by_digest: dict[str, ApiKey] = {}
        self._lock = threading.Lock()
        names: set[str] = set()
        for i, entry in enumerate(entries):
            key = _entry(entry, i)
            if key.name in names or key.sha256 in self._by_digest:
                raise ConfigError(f"keys entry {i} ({key.name!r}) repeats a name or a key")
            names.add(key.name)
            key.tokens, key.stamp = float(key.burst), clock()
            self._by_digest[key.sha256] = key

    @classmethod
    def from_file(cls, path: str | Path) -> KeyRing:
        """The keys of a keys file.

        Raises:
            ConfigError: the file is missing, not JSON, or has a bad entry (named).
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"keys file {path} does not exist") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"keys file {path} is not JSON: {e}") from None
        if not isinstance(data, Mapping) or not isinstance(data.get("keys"), list):
            raise ConfigError(f'keys file {path}: expected {{"keys": [...]}}')
        try:
            return cls(data["keys"])
        except ConfigError as e:
            raise ConfigError(f"keys file {path}: {e}") from None

    def __len__(self) -> int:
        return len(self._by_digest)

    def check(self, key: str | None, model: str) -> ApiKey:
        """The key's entry if it may call ``model`` now (one request taken from its bucket).

        Raises:
            AuthError: 401 no or unknown key, 403 a model it may not use, 429 over its rate.
        """
        if not key:
            raise AuthError(401, "no API key: send it in the X-API-Key header")
        digest = hash_key(key)
        found = None
        for stored, entry in self._by_digest.items():  # constant time per comparison
            if hmac.compare_digest(stored, digest):
                found = entry
        if found is None:
            raise AuthError(401, "unknown API key")
        if not found.may_use(model):
            raise AuthError(403, f"key {found.name!r} may not use model {model!r}")
        if found.rate_per_s is not None:
            self._take(found)
        return found

    def _take(self, key: ApiKey) -> None:
        assert key.rate_per_s is not None
        with self._lock:
            now = self.clock()
            key.tokens = min(key.burst, key.tokens + (now - key.stamp) * key.rate_per_s)
            key.stamp = now
            if key.tokens < 1:
                wait = (1 - key.tokens) / key.rate_per_s
                raise AuthError(
                    429, f"key {key.name!r} is over {key.rate_per_s:g} requests/s", wait
                )
            key.tokens -= 1


def _entry(entry: Mapping[str, Any], index: int) -> ApiKey:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"keys entry {index} is not an object")
    name, digest = entry.get("name"), entry.get("sha256")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"keys entry {index} has no name")
    if not isinstance(digest, str) or len(digest) != 64 or not _is_hex(digest):
        raise ConfigError(f"keys entry {index} ({name!r}): sha256 must be 64 hex digits")
    models = entry.get("models", ["*"])
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        raise ConfigError(f"keys entry {index} ({name!r}): models must be a list of names")
    rate = entry.get("rate_per_s")
    if rate is not None and (not isinstance(rate, int | float) or rate <= 0):
        raise ConfigError(f"keys entry {index} ({name!r}): rate_per_s must be > 0")
    burst = entry.get("burst", max(1, math.ceil(rate)) if rate else 1)
    if not isinstance(burst, int) or burst < 1:
        raise ConfigError(f"keys entry {index} ({name!r}): burst must be a whole number >= 1")
    return ApiKey(name, digest.lower(), tuple(models), rate, burst)


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True
