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

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

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


def cached_rows(cache: Any, version: str, contents: Sequence[Any]) -> tuple[list[int], np.ndarray]:
    """The contents whose vectors ``cache`` holds: ``(their indices, (M, D) vectors)``. A first
    look before computing: its misses are not counted (the computing call looks them up again).
    """
    rows, vectors = [], []
    for row, content in enumerate(contents):
        vector = cache.get(version, content_digest(content), count_miss=False)
        if vector is not None:
            rows.append(row)
            vectors.append(np.asarray(vector, dtype=np.float32))
    return rows, np.stack(vectors) if vectors else np.zeros((0, 0), np.float32)


def answers_from_cache(
    cache: Any,
    version: str,
    contents: Sequence[Any],
    answer: Callable[[np.ndarray, list[int]], list[Any]],
) -> list[Any]:
    """One answer per content whose vector is cached (``answer(vectors, indices)``, e.g. the
    model's head on them), ``None`` for the others: what a service can answer at once, without
    waiting for a batch."""
    out: list[Any] = [None] * len(contents)
    if cache is None:
        return out
    rows, vectors = cached_rows(cache, version, contents)
    if rows:
        for row, value in zip(rows, answer(vectors, rows), strict=True):
            out[row] = value
    return out


def head_answers(
    cache: Any,
    version: str,
    contents: Sequence[Any],
    head: torch.nn.Module,
    respond: Callable[[list[int], torch.Tensor], list[Any]],
) -> list[Any]:
    """:func:`answers_from_cache` through a classification ``head`` (e.g. its
    :func:`host_copy`): ``respond(rows, class probabilities)`` answers the cached contents,
    ``None`` stands for the others."""

    @torch.no_grad()
    def answer(vectors: np.ndarray, rows: list[int]) -> list[Any]:
        logits = head(torch.from_numpy(vectors))
        return respond(rows, torch.softmax(logits.float(), dim=1))

    return answers_from_cache(cache, version, contents, answer)


def host_copy(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` (a small head) as a CPU copy in eval mode, or itself when its weights are
    already on the CPU: answers from cached vectors then never queue behind a batch's work on an
    accelerator.

    Example:
        >>> head = torch.nn.Linear(4, 2)
        >>> host_copy(head) is head
        True
    """
    if all(p.device.type == "cpu" for p in module.parameters()):
        return module
    return copy.deepcopy(module).to("cpu").eval()
