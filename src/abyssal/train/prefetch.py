"""Building the next batches in a background thread while the model trains on the current one
(``train.prefetch_batches``): for tasks whose batches are made on the fly and cost CPU time, such
as the fraud solution's neighbour-sampled subgraphs.

Batches come out in the order the task yields them; an error while building one is raised in the
training loop when that batch is due. A task whose batch building draws from the global random
number generators (torch, NumPy, ``random``) would draw them in another thread, at another time,
and lose exact repeatability; tasks that seed their own generators (as the built-in ones do) keep
it.

Example:
    >>> with Prefetcher(iter(range(3)), depth=2) as batches:
    ...     list(batches)
    [0, 1, 2]
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

_END = object()


class Prefetcher:
    """Iterate ``source`` through a bounded queue filled by a daemon thread.

    Args:
        source: the batches.
        depth: how many batches may wait, built, ahead of the consumer (>= 1).
    """

    def __init__(self, source: Iterator[Any], depth: int) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._queue: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(source,), daemon=True)
        self._thread.start()

    def _put(self, item: tuple[bool, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self, source: Iterator[Any]) -> None:
        try:
            for batch in source:
                if not self._put((True, batch)):
                    return
            self._put((False, _END))
        except BaseException as exc:  # handed to the consumer, raised where the batch is due
            self._put((False, exc))

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self) -> Any:
        ok, item = self._queue.get()
        if ok:
            return item
        if item is _END:
            raise StopIteration
        raise item

    def close(self) -> None:
        """Stop building (the consumer stopped early, e.g. at ``max_steps``)."""
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
