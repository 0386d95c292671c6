"""Serving registered model versions: the building blocks of ``abyssal serve``.

- :mod:`abyssal.serve.batcher`: dynamic batching in plain asyncio (bounded queue, priorities,
  buckets for variable-size inputs, per-request timeouts, one bad request failing alone).
"""

from abyssal.serve.batcher import BatchPolicy, DynamicBatcher, QueueFull, RequestTimeout

__all__ = ["BatchPolicy", "DynamicBatcher", "QueueFull", "RequestTimeout"]
