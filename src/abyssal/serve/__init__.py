"""Serving registered model versions: the building blocks of ``abyssal serve``.

- :mod:`abyssal.serve.batcher`: dynamic batching in plain asyncio (bounded queue, priorities,
  buckets for variable-size inputs, per-request timeouts, one bad request failing alone).
- :mod:`abyssal.serve.cache`: feature vectors by content digest and model version, in memory
  (LRU, byte bound, time to live), in a Redis server replicas share, or in a backend a plugin
  adds (``abyssal.caches``; :func:`~abyssal.serve.cache.open_cache` opens one by URL).
"""

from abyssal.serve.batcher import BatchPolicy, DynamicBatcher, QueueFull, RequestTimeout
from abyssal.serve.cache import (
    CACHES,
    FeatureCache,
    MemoryFeatureCache,
    RedisFeatureCache,
    content_digest,
    open_cache,
)

__all__ = [
    "CACHES",
    "BatchPolicy",
    "DynamicBatcher",
    "FeatureCache",
    "MemoryFeatureCache",
    "QueueFull",
    "RedisFeatureCache",
    "RequestTimeout",
    "content_digest",
    "open_cache",
]
