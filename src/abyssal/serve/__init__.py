"""Serving registered model versions: the building blocks of ``abyssal serve``.

- :mod:`abyssal.serve.batcher`: dynamic batching in plain asyncio (bounded queue, priorities,
  buckets for variable-size inputs, per-request timeouts, one bad request failing alone).
- :mod:`abyssal.serve.cache`: feature vectors by content digest and model version, in memory
  (LRU, byte bound, time to live) or in a Redis server replicas share.
"""

from abyssal.serve.batcher import BatchPolicy, DynamicBatcher, QueueFull, RequestTimeout
from abyssal.serve.cache import MemoryFeatureCache, RedisFeatureCache, content_digest

__all__ = [
    "BatchPolicy",
    "DynamicBatcher",
    "MemoryFeatureCache",
    "QueueFull",
    "RedisFeatureCache",
    "RequestTimeout",
    "content_digest",
]
