"""A cache of feature vectors for served models: an embedding (or any array) a solution computes
for a request, kept by the request's content and the model version that computed it.

Keys are ``(version, digest)``: :func:`content_digest` hashes the request's content (bytes,
text, arrays, with their dtypes and shapes), so equal content hits whatever object carried it;
the version is part of the key, so a newly served version never reads its predecessor's vectors
(:meth:`MemoryFeatureCache.invalidate` also drops them at once).

- :class:`MemoryFeatureCache`: one process; least-recently-used entries are evicted beyond
  ``max_entries`` or ``max_bytes``, and an entry older than ``ttl_s`` is a miss. Thread-safe (the
  batcher runs models in worker threads).
- :class:`RedisFeatureCache`: replicas share vectors through a Redis server the user starts
  (``redis-server``); values are stored as ``.npy`` bytes with Redis's own expiry (``ttl_s``)
  and its memory policy bounding the size (``maxmemory`` with ``allkeys-lru``).

Both count hits, misses, evictions and expiries (:class:`CacheStats`); the service reports the
hit rate.

Other backends come from plugins: :data:`CACHES` holds a factory per URL scheme (the
``abyssal.caches`` entry-point group), and :func:`open_cache` opens the backend a URL names
(``memory://``, ``redis://host:6379/0``, ``acme-kv://...``); ``abyssal serve --cache URL`` uses
it. A backend is anything with the methods of :class:`FeatureCache`.

Example:
    >>> cache = MemoryFeatureCache(max_entries=2)
    >>> key = content_digest("a cough for three days")
    >>> cache.get("text:3", key) is None
    True
    >>> cache.put("text:3", key, np.ones(4, dtype=np.float32))
    >>> cache.get("text:3", key).sum(), cache.stats.hit_rate
    (np.float32(4.0), 0.5)
"""

from __future__ import annotations

import io
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from abyssal.core.digest import content_digest
from abyssal.core.errors import AbyssalError, ConfigError, RegistryError
from abyssal.core.registry import Registry

__all__ = [
    "CACHES",
    "CacheFactory",
    "CacheStats",
    "FeatureCache",
    "MemoryFeatureCache",
    "RedisFeatureCache",
    "content_digest",
    "open_cache",
]


@dataclass
class CacheStats:
    """Counts since the cache was made."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0
    expired: int = 0
    invalidated: int = 0

    @property
    def hit_rate(self) -> float:
        asked = self.hits + self.misses
        return self.hits / asked if asked else 0.0


class FeatureCache(Protocol):
    """What a feature-cache backend implements: what serving (:mod:`abyssal.serve.app`) and the
    predictors (:mod:`abyssal.nn.features`) call. Calls come from several threads at once (the
    batcher's workers and the HTTP loop's). A backend may also define ``__len__`` (the entries
    it holds, reported in ``/metrics``).

    Attributes:
        stats: the counts since the cache was made; ``/metrics`` reports its ``hits``,
            ``misses``, ``hit_rate`` and ``evictions``.
    """

    stats: CacheStats

    def get(self, version: str, digest: str, count_miss: bool = True) -> np.ndarray | None:
        """The vector stored for ``(version, digest)``, or ``None``: a miss, counted in
        ``stats.misses`` unless ``count_miss`` is false (a first look whose misses are looked
        up again); a hit is counted in ``stats.hits``."""
        ...

    def put(self, version: str, digest: str, value: np.ndarray) -> None:
        """Store ``value`` (an array, any dtype and shape) for ``(version, digest)``; what
        :meth:`get` returns for it must not change when the caller changes ``value``."""
        ...

    def invalidate(self, version: str | None = None) -> int:
        """Drop every entry of ``version`` (a model version no longer served; ``None``: all
        entries); how many were dropped."""
        ...


class MemoryFeatureCache:
    """An in-process LRU cache of arrays with a time to live.

    Args:
        max_entries: most entries kept.
        max_bytes: most bytes of array data kept (``None``: no byte bound).
        ttl_s: an entry older than this is a miss (``None``: never expires).
        clock: seconds, monotonic (tests pass their own).
    """

    def __init__(
        self,
        max_entries: int = 10_000,
        *,
        max_bytes: int | None = 256 * 2**20,
        ttl_s: float | None = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ConfigError(f"cache max_entries must be >= 1, got {max_entries}")
        if max_bytes is not None and max_bytes < 1:
            raise ConfigError(f"cache max_bytes must be >= 1 or null, got {max_bytes}")
        if ttl_s is not None and ttl_s <= 0:
            raise ConfigError(f"cache ttl_s must be > 0 or null, got {ttl_s}")
        self.max_entries, self.max_bytes, self.ttl_s, self.clock = (
            max_entries,
            max_bytes,
            ttl_s,
            clock,
        )
        self.stats = CacheStats()
        self._entries: OrderedDict[tuple[str, str], tuple[float, np.ndarray]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, version: str, digest: str, count_miss: bool = True) -> np.ndarray | None:
        """The vector stored for ``(version, digest)``, or ``None`` (a miss; counted unless
        ``count_miss`` is false: a first look whose misses are looked up again)."""
        key = (version, digest)
        with self._lock:
            found = self._entries.get(key)
            stale = (
                self.ttl_s is not None and self.clock() - found[0] > self.ttl_s if found else False
            )
            if found is not None and stale:
                self._drop(key)
                self.stats.expired += 1
                found = None
            if found is None:
                self.stats.misses += count_miss
                return None
            self._entries.move_to_end(key)
            self.stats.hits += 1
            return found[1]

    def put(self, version: str, digest: str, value: np.ndarray) -> None:
        """Store ``value`` (an array; kept read-only) and evict the least recently used
        entries beyond the bounds. A value larger than ``max_bytes`` is not stored."""
        array = np.array(value, copy=True)
        array.setflags(write=False)
        if self.max_bytes is not None and array.nbytes > self.max_bytes:
            return
        key = (version, digest)
        with self._lock:
            if key in self._entries:
                self._drop(key)
            self._entries[key] = (self.clock(), array)
            self._bytes += array.nbytes
            while len(self._entries) > self.max_entries or (
                self.max_bytes is not None and self._bytes > self.max_bytes
            ):
                oldest = next(iter(self._entries))
                self._drop(oldest)
                self.stats.evictions += 1

    def invalidate(self, version: str | None = None) -> int:
        """Drop every entry of ``version`` (all entries with ``None``); how many were dropped."""
        with self._lock:
            keys = [k for k in self._entries if version is None or k[0] == version]
            for key in keys:
                self._drop(key)
            self.stats.invalidated += len(keys)
            return len(keys)

    def _drop(self, key: tuple[str, str]) -> None:
        _, array = self._entries.pop(key)
        self._bytes -= array.nbytes


class RedisFeatureCache:
    """Feature vectors in Redis, shared by every replica that points at the same server.

    Args:
        client: a ``redis.Redis`` client (or one with its ``get``, ``set`` and ``scan_iter``).
        ttl_s: Redis expiry of each entry (``None``: none; then bound the server's memory with
            ``maxmemory`` and ``maxmemory-policy allkeys-lru``).
        prefix: the key prefix (``<prefix>:<version>:<digest>``).
    """

    def __init__(
        self, client: Any, *, ttl_s: float | None = 3600.0, prefix: str = "abyssal:features"
    ) -> None:
        if ttl_s is not None and ttl_s <= 0:
            raise ConfigError(f"cache ttl_s must be > 0 or null, got {ttl_s}")
        self.client, self.ttl_s, self.prefix = client, ttl_s, prefix
        self.stats = CacheStats()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisFeatureCache:
        """A cache on the Redis server at ``url`` (``redis://host:6379/0``)."""
        from abyssal.core.optional import require

        redis = require("redis", extra="serve", purpose="a shared feature cache")
        return cls(redis.Redis.from_url(url), **options)

    def _key(self, version: str, digest: str) -> str:
        return f"{self.prefix}:{version}:{digest}"

    def get(self, version: str, digest: str, count_miss: bool = True) -> np.ndarray | None:
        raw = self.client.get(self._key(version, digest))
        if raw is None:
            self.stats.misses += count_miss
            return None
        self.stats.hits += 1
        array = np.load(io.BytesIO(raw), allow_pickle=False)
        array.setflags(write=False)
        return array

    def put(self, version: str, digest: str, value: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(value), allow_pickle=False)
        expiry = None if self.ttl_s is None else max(1, round(self.ttl_s * 1000))
        self.client.set(self._key(version, digest), buffer.getvalue(), px=expiry)

    def invalidate(self, version: str | None = None) -> int:
        pattern = f"{self.prefix}:{'*' if version is None else version}:*"
        keys = list(self.client.scan_iter(match=pattern))
        if keys:
            self.client.delete(*keys)
        self.stats.invalidated += len(keys)
        return len(keys)


class CacheFactory(Protocol):
    """What an entry of :data:`CACHES` is: ``(url, *, entries, ttl_s) -> FeatureCache``."""

    def __call__(self, url: str | None, *, entries: int, ttl_s: float | None) -> FeatureCache: ...


CACHES: Registry[CacheFactory] = Registry("feature-cache backend", group="abyssal.caches")
"""Feature-cache backends by URL scheme. An entry's name is the scheme (``memory``, ``redis``,
``acme-kv``); its object is a factory ``(url: str | None, *, entries: int, ttl_s: float | None)
-> FeatureCache``: ``url`` is the whole URL (``None`` when only the name was given),
``entries`` the most entries to keep (``--cache-entries``; a backend bounded otherwise may
ignore it), ``ttl_s`` a vector's life in seconds (``None``: no expiry). Plugins add entries
through the ``abyssal.caches`` entry-point group."""


def _memory(url: str | None, *, entries: int, ttl_s: float | None) -> FeatureCache:
    return MemoryFeatureCache(entries, ttl_s=ttl_s)


def _redis(url: str | None, *, entries: int, ttl_s: float | None) -> FeatureCache:
    return RedisFeatureCache.from_url(url or "redis://localhost:6379/0", ttl_s=ttl_s)


CACHES.add("memory", _memory, summary="in this process: LRU with a byte bound and a time to live")
CACHES.add("redis", _redis, summary="a Redis server replicas share (redis://host:6379/0)")
CACHES.add("rediss", _redis, summary="a Redis server over TLS (rediss://host:6380/0)")


def open_cache(
    url: str, *, entries: int = 10_000, ttl_s: float | None = 3600.0, backend: str | None = None
) -> FeatureCache:
    """The feature cache ``url`` names: the backend of :data:`CACHES` its scheme names
    (``memory://``, ``redis://host:6379/0``, a plugin's ``acme-kv://...``; a bare name such as
    ``memory`` opens that backend without a URL).

    Args:
        url: the cache's URL, or a backend's name.
        entries: the most entries to keep (backends with their own bound may ignore it).
        ttl_s: a vector's life in seconds (``None``: no expiry).
        backend: the backend to use whatever the scheme (``--redis URL`` is ``redis``'s).

    Returns:
        The cache, checked to have ``get``, ``put``, ``invalidate`` and ``stats``.

    Raises:
        ConfigError: an unknown scheme (the backends are listed), or a backend that fails to
            open the cache or returns something that is not a cache (a plugin's package named).
        RegistryError: a plugin backend that fails to load, or a scheme two packages claim.

    Example:
        >>> open_cache("memory://", entries=100).max_entries
        100
    """
    shown = _redacted(url)
    if backend is None:
        backend, rest = url.split("://", 1) if "://" in url else (url, None)
        backend = backend.lower()
        target: str | None = url if rest is not None else None
    else:
        target = url
    if backend not in CACHES and backend not in CACHES.conflicts():
        raise ConfigError(
            f"feature cache {shown!r}: no backend for '{backend}'; choose one of: "
            f"{_backends()} (the URL's scheme names it: memory://, redis://host:6379/0)"
        )
    try:
        factory = CACHES.get(backend)
    except RegistryError as exc:
        raise RegistryError(f"feature cache {shown!r}: {exc}") from exc
    plugin = CACHES.origin(backend)
    who = f"backend '{backend}'" + (
        f" from the plugin package {plugin.package} {plugin.version}" if plugin else ""
    )
    try:
        cache = factory(target, entries=entries, ttl_s=ttl_s)
    except AbyssalError as exc:
        if plugin is None:
            raise
        raise ConfigError(f"feature cache {shown!r}: the {who} failed: {exc}") from exc
    except Exception as exc:
        raise ConfigError(
            f"feature cache {shown!r}: the {who} failed: {type(exc).__name__}: {exc}"
        ) from exc
    missing = [m for m in ("get", "put", "invalidate", "stats") if not hasattr(cache, m)]
    if missing:
        raise ConfigError(
            f"feature cache {shown!r}: the {who} returned {type(cache).__name__}, which has no "
            f"{', '.join(missing)} (see abyssal.serve.cache.FeatureCache)"
        )
    return cache


def _backends() -> str:
    names = []
    for name in CACHES.names():
        plugin = CACHES.origin(name)
        names.append(name if plugin is None else f"{name} ({plugin.package} {plugin.version})")
    return ", ".join(names)


def _redacted(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***`` (for messages)."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    credentials, at, host = netloc.rpartition("@")
    if not sep or not at or ":" not in credentials:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}{slash}{path}"
