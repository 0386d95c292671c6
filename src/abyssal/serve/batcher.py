"""Dynamic batching for a served model: plain asyncio, no web server.

Requests are queued and grouped: a batch is run as soon as ``max_batch_size`` compatible
requests wait, or when the oldest waiting one has waited ``max_wait_ms``. Compatible means the
same bucket (``bucket(item)``, e.g. a length bucket, so variable-size inputs are padded only to
their neighbours); a higher ``priority`` is served first, equal priorities in arrival order.

The batch function runs in a worker thread (the event loop stays free to accept requests) and
returns one result per item, where a result may be an exception: that request fails alone. If
the function raises for the whole batch, each item is run again alone, so one bad request fails
with its own error and the others get their answers.

Bounds: at most ``max_queue`` requests wait; one more is refused at once with
:class:`QueueFull` (a service answers 503 with ``Retry-After``) instead of letting the queue
grow. A request that is not answered within its timeout gets :class:`RequestTimeout` (504); if
it had not started, it is dropped from the queue and never run. :meth:`DynamicBatcher.stop`
refuses new requests and, by default, drains the waiting ones.

Example:
    >>> import asyncio
    >>> async def main():
    ...     batcher = DynamicBatcher(lambda xs: [2 * x for x in xs], BatchPolicy(max_wait_ms=1))
    ...     await batcher.start()
    ...     answers = await asyncio.gather(*(batcher.submit(i) for i in range(5)))
    ...     await batcher.stop()
    ...     return answers, batcher.stats.batches
    >>> asyncio.run(main())
    ([0, 2, 4, 6, 8], 1)
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from abyssal.core.errors import AbyssalError, ConfigError

In = TypeVar("In")
Out = TypeVar("Out")


class QueueFull(AbyssalError):
    """The batcher's queue is full (or it is stopping): retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RequestTimeout(AbyssalError):
    """A request was not answered within its timeout."""


@dataclass(frozen=True)
class BatchPolicy:
    """How requests are grouped and bounded.

    Attributes:
        max_batch_size: most requests in one batch.
        max_wait_ms: longest a request waits for others before its batch runs.
        max_queue: most requests waiting; one more is refused (:class:`QueueFull`).
        timeout_s: default per-request timeout (``None``: none).
    """

    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 1024
    timeout_s: float | None = 30.0

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ConfigError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.max_wait_ms < 0:
            raise ConfigError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.max_queue < 1:
            raise ConfigError(f"max_queue must be >= 1, got {self.max_queue}")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ConfigError(f"timeout_s must be > 0 or null, got {self.timeout_s}")


@dataclass
class BatcherStats:
    """Counts since start: requests by outcome, batches and their sizes, the queue's depth."""

    submitted: int = 0
    answered: int = 0
    failed: int = 0
    timed_out: int = 0
    refused: int = 0
    batches: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)
    queue_depth: int = 0

    @property
    def mean_batch_size(self) -> float:
        items = sum(size * n for size, n in self.batch_sizes.items())
        return items / self.batches if self.batches else 0.0


@dataclass(order=True)
class _Pending:
    sort_key: tuple[int, int]  # (-priority, arrival number): the heap's order
    arrived: float = field(compare=False)
    item: Any = field(compare=False)
    bucket: Hashable = field(compare=False)
    future: asyncio.Future = field(compare=False)


class DynamicBatcher(Generic[In, Out]):
    """Groups submitted items into batches for ``run``.

    Args:
        run: ``items -> results``, one result (or exception) per item, in order; runs in the
            batcher's own worker thread (one for all its batches and :meth:`call`: a model's
            work stays on one thread, with one set of the math library's threads).
        policy: sizes, waits and bounds.
        bucket: which items may share a batch (equal keys); default: all.
        name: shown in errors (e.g. the model version).
    """

    def __init__(
        self,
        run: Callable[[list[In]], Sequence[Out | BaseException]],
        policy: BatchPolicy | None = None,
        *,
        bucket: Callable[[In], Hashable] | None = None,
        name: str = "model",
    ) -> None:
        self.run, self.policy, self.name = run, policy or BatchPolicy(), name
        self.bucket = bucket or (lambda _item: None)
        self.stats = BatcherStats()
        self._heap: list[_Pending] = []
        self._arrivals = itertools.count()
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._accepting = False
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batcher-{name}")
        self._thread_closed = False

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the batcher's worker thread (after the batch running there).

        Raises:
            QueueFull: the batcher has stopped.
        """
        if self._thread_closed:
            raise QueueFull(f"{self.name} is shutting down")
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the worker (in the running event loop)."""
        if self._worker is not None:
            return
        self._wakeup = asyncio.Event()
        self._accepting = True
        self._worker = asyncio.create_task(self._work(), name=f"batcher-{self.name}")

    async def stop(self, *, drain: bool = True) -> None:
        """Refuse new requests; answer the waiting ones (``drain``) or fail them with
        :class:`QueueFull`; then end the worker."""
        self._accepting = False
        if not drain:
            while self._heap:
                pending = heapq.heappop(self._heap)
                self._fail(pending, QueueFull(f"{self.name} is shutting down"))
        if self._worker is None:
            return
        assert self._wakeup is not None
        self._wakeup.set()
        await self._worker
        self._worker = None
        self._thread_closed = True
        self._thread.shutdown(wait=False)

    # -- requests --------------------------------------------------------------------------------

    async def submit(self, item: In, *, priority: int = 0, timeout_s: float | None = None) -> Out:
        """The result for ``item`` once its batch has run (:meth:`enqueue` then :meth:`wait`).

        Args:
            item: one request's input.
            priority: higher is served first.
            timeout_s: this request's timeout (default: the policy's).

        Raises:
            QueueFull: the queue is full, or the batcher is not running.
            RequestTimeout: no answer within the timeout.
            Exception: what ``run`` gave for this item.
        """
        return await self.wait(self.enqueue(item, priority=priority), timeout_s)

    def enqueue(self, item: In, *, priority: int = 0) -> asyncio.Future:
        """Queue ``item`` now (no await: a caller holding this batcher is queued on it even if
        the batcher is told to stop right after) and return the future of its result.

        Raises:
            QueueFull: the queue is full, or the batcher is not running.
        """
        if not self._accepting or self._wakeup is None:
            self.stats.refused += 1
            raise QueueFull(f"{self.name} is not accepting requests (stopped or not started)")
        if len(self._heap) >= self.policy.max_queue:
            self.stats.refused += 1
            raise QueueFull(
                f"{self.name}: {len(self._heap)} requests are waiting (the limit); retry shortly",
                retry_after=max(0.1, self.policy.max_wait_ms / 1000 * 4),
            )
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        pending = _Pending(
            (-priority, next(self._arrivals)), time.monotonic(), item, self.bucket(item), future
        )
        heapq.heappush(self._heap, pending)
        self.stats.submitted += 1
        self.stats.queue_depth = len(self._heap)
        self._wakeup.set()
        return future

    async def wait(self, future: asyncio.Future, timeout_s: float | None = None) -> Out:
        """The result of a request :meth:`enqueue` queued, within ``timeout_s`` (default: the
        policy's); a request given up on is dropped from the queue if it has not run."""
        limit = self.policy.timeout_s if timeout_s is None else timeout_s
        try:
            return await asyncio.wait_for(asyncio.shield(future), limit)
        except TimeoutError:
            self.stats.timed_out += 1
            future.cancel()  # not run if still waiting; its answer is dropped if running
            raise RequestTimeout(f"{self.name}: no answer within {limit:g} s") from None

    # -- the worker ------------------------------------------------------------------------------

    async def _work(self) -> None:
        assert self._wakeup is not None
        while True:
            self._drop_cancelled()
            if not self._heap:
                if not self._accepting:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = await self._gather()
            if batch:
                await self._run(batch)

    def _drop_cancelled(self) -> None:
        if any(p.future.done() for p in self._heap):
            self._heap = [p for p in self._heap if not p.future.done()]
            heapq.heapify(self._heap)
        self.stats.queue_depth = len(self._heap)

    async def _gather(self) -> list[_Pending]:
        """Wait until the first request's bucket fills a batch or its wait is over, then take
        that batch off the queue."""
        assert self._wakeup is not None
        first = self._heap[0]
        deadline = first.arrived + self.policy.max_wait_ms / 1000
        while self._accepting:
            if self._count(first.bucket) >= self.policy.max_batch_size:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), left)
            except TimeoutError:
                break
            self._drop_cancelled()
            if not self._heap:
                return []
            if self._heap[0] is not first:  # a higher priority arrived: it leads now
                first = self._heap[0]
                deadline = min(deadline, first.arrived + self.policy.max_wait_ms / 1000)
        return self._take(first.bucket)

    def _count(self, bucket: Hashable) -> int:
        return sum(1 for p in self._heap if p.bucket == bucket and not p.future.done())

    def _take(self, bucket: Hashable) -> list[_Pending]:
        chosen, rest = [], []
        for pending in sorted(self._heap):
            if pending.future.done():
                continue
            if pending.bucket == bucket and len(chosen) < self.policy.max_batch_size:
                chosen.append(pending)
            else:
                rest.append(pending)
        self._heap = rest  # sorted: a valid heap
        self.stats.queue_depth = len(rest)
        return chosen

    async def _run(self, batch: list[_Pending]) -> None:
        items = [p.item for p in batch]
        self.stats.batches += 1
        self.stats.batch_sizes[len(batch)] = self.stats.batch_sizes.get(len(batch), 0) + 1
        try:
            results = await self.call(self._checked, items)
        except Exception:  # the whole batch failed: find the bad requests one by one
            results = []
            for item in items:
                try:
                    results += await self.call(self._checked, [item])
                except Exception as e:
                    results.append(e)
        for pending, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                self._fail(pending, result)
            elif not pending.future.done():
                pending.future.set_result(result)
                self.stats.answered += 1

    def _checked(self, items: list[In]) -> list[Out | BaseException]:
        results = list(self.run(items))
        if len(results) != len(items):
            raise RuntimeError(
                f"{self.name}: the batch function gave {len(results)} results for "
                f"{len(items)} requests"
            )
        return results

    def _fail(self, pending: _Pending, error: BaseException) -> None:
        if not pending.future.done():
            pending.future.set_exception(error)
            self.stats.failed += 1
