"""Feature vectors through a cache: what a predictor computes once per distinct input (a text's
pooled embedding, an image's backbone features) and then reads back.

The cache is any object with ``get(version, digest)`` and ``put(version, digest, array)``
(:mod:`abyssal.serve.cache` has in-memory and Redis ones); keys are the model version and the
input's :func:`~abyssal.core.digest.content_digest`.

Example:
    >>> cache = MemoryFeatureCache()  # doctest: +SKIP
    >>> cached_features(cache, "text:3", token_ids, embed_rows)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from abyssal.core.digest import content_digest


def cached_features(
    cache: Any,
    version: str,
    contents: Sequence[Any],
    compute: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """(N, D) one vector per content: from ``cache`` where found, else from ``compute(rows)``
    (the indices of the missing contents -> their (M, D) vectors), which are then stored. Equal
    contents in one call are computed once.

    Shapes:
        contents: N inputs (arrays, text, bytes); returns float32 (N, D).
    """
    digests = [content_digest(c) for c in contents]
    found: dict[str, np.ndarray] = {}
    for digest in dict.fromkeys(digests):
        vector = cache.get(version, digest)
        if vector is not None:
            found[digest] = vector
    first = {d: i for i, d in reversed(list(enumerate(digests)))}  # one row per distinct input
    missing = np.array([first[d] for d in dict.fromkeys(digests) if d not in found], np.int64)
    if len(missing):
        vectors = np.asarray(compute(missing), dtype=np.float32)
        for row, vector in zip(missing, vectors, strict=True):
            cache.put(version, digests[row], vector)
            found[digests[row]] = vector
    return np.stack([np.asarray(found[d], dtype=np.float32) for d in digests])
