"""The dynamic batcher without a server: grouping up to the batch size, buckets, priorities, one
bad request failing alone, a bounded queue, timeouts that drop waiting requests, draining."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from abyssal.core.errors import ConfigError
from abyssal.serve.batcher import BatchPolicy, DynamicBatcher, QueueFull, RequestTimeout


def run(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(main(), 10))  # a hang fails the test, not the suite


class Recorder:
    """A batch function that records its batches and can be held at the gate."""

    def __init__(self, fn: Callable[[Any], Any] = lambda x: x * 10) -> None:
        self.fn, self.batches = fn, []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, items: list[Any]) -> list[Any]:
        self.entered.set()
        self.gate.wait(5)
        self.batches.append(list(items))
        return [self.fn(x) for x in items]


async def held(batcher: DynamicBatcher, recorder: Recorder, item: Any = -1) -> asyncio.Task:
    """A first request that keeps the worker busy until ``recorder.gate`` opens."""
    recorder.gate.clear()
    recorder.entered.clear()
    task = asyncio.create_task(batcher.submit(item))
    while not recorder.entered.is_set():
        await asyncio.sleep(0.001)
    return task


def test_requests_waiting_together_run_as_batches_of_at_most_the_size() -> None:
    recorder = Recorder()

    async def main() -> tuple[list[int], DynamicBatcher]:
        batcher = DynamicBatcher(recorder, BatchPolicy(max_batch_size=4, max_wait_ms=50))
        await batcher.start()
        first = await held(batcher, recorder)
        rest = [asyncio.create_task(batcher.submit(i)) for i in range(10)]
        await asyncio.sleep(0.01)
        recorder.gate.set()
        answers = await asyncio.gather(first, *rest)
        await batcher.stop()
        return answers, batcher

    answers, batcher = run(main)
    assert answers == [-10, *(10 * i for i in range(10))]  # each request gets its own answer
    assert recorder.batches == [[-1], [0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert batcher.stats.batch_sizes == {1: 1, 4: 2, 2: 1} and batcher.stats.answered == 11
    assert batcher.stats.mean_batch_size == pytest.approx(11 / 4)


def test_a_lone_request_runs_after_its_wait_in_a_batch_of_one() -> None:
    recorder = Recorder()

    async def main() -> int:
        batcher = DynamicBatcher(recorder, BatchPolicy(max_batch_size=8, max_wait_ms=5))
        await batcher.start()
        answer = await batcher.submit(3)
        await batcher.stop()
        return answer

    assert run(main) == 30 and recorder.batches == [[3]]


def test_only_requests_of_one_bucket_share_a_batch() -> None:
    recorder = Recorder(len)

    async def main() -> list[int]:
        batcher = DynamicBatcher(
            recorder, BatchPolicy(max_batch_size=8, max_wait_ms=50), bucket=lambda s: len(s) // 4
        )
        await batcher.start()
        first = await held(batcher, recorder, "held")
        words = ["a", "bb", "longer word", "ccc", "the longest one", "dd"]
        tasks = [asyncio.create_task(batcher.submit(w)) for w in words]
        await asyncio.sleep(0.01)
        recorder.gate.set()
        out = await asyncio.gather(first, *tasks)
        await batcher.stop()
        return out

    assert run(main) == [4, 1, 2, 11, 3, 15, 2]
    buckets = [{len(w) // 4 for w in batch} for batch in recorder.batches[1:]]
    assert all(len(b) == 1 for b in buckets)
    assert ["a", "bb", "ccc", "dd"] in recorder.batches


def test_higher_priority_is_served_first() -> None:
    recorder = Recorder()

    async def main() -> None:
        batcher = DynamicBatcher(recorder, BatchPolicy(max_batch_size=1, max_wait_ms=0))
        await batcher.start()
        first = await held(batcher, recorder)
        low = asyncio.create_task(batcher.submit(1, priority=0))
        await asyncio.sleep(0.005)
        high = asyncio.create_task(batcher.submit(2, priority=5))
        await asyncio.sleep(0.005)
        recorder.gate.set()
        await asyncio.gather(first, low, high)
        await batcher.stop()

    run(main)
    assert recorder.batches == [[-1], [2], [1]]


def test_one_bad_request_fails_alone_and_the_others_are_answered() -> None:
    def score(x: int) -> int:
        if x == 3:
            raise ValueError("request 3 is malformed")
        return x + 100

    recorder = Recorder(score)

    async def main() -> list[Any]:
        batcher = DynamicBatcher(recorder, BatchPolicy(max_batch_size=8, max_wait_ms=50))
        await batcher.start()
        first = await held(batcher, recorder)
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(5)]
        await asyncio.sleep(0.01)
        recorder.gate.set()
        out = await asyncio.gather(first, *tasks, return_exceptions=True)
        await batcher.stop()
        return out

    out = run(main)
    assert out[:4] == [99, 100, 101, 102] and out[5] == 104
    assert isinstance(out[4], ValueError) and "request 3" in str(out[4])
    # the whole batch raised, so each of its requests was run again alone
    assert recorder.batches[1] == [0, 1, 2, 3, 4]
    assert recorder.batches[2:] == [[0], [1], [2], [3], [4]]


def test_results_that_are_exceptions_fail_only_their_request() -> None:
    def batch(items: list[int]) -> list[Any]:
        return [KeyError(f"unknown id {x}") if x < 0 else x for x in items]

    async def main() -> list[Any]:
        batcher = DynamicBatcher(batch, BatchPolicy(max_batch_size=4, max_wait_ms=20))
        await batcher.start()
        out = await asyncio.gather(*(batcher.submit(x) for x in (1, -2, 3)), return_exceptions=True)
        await batcher.stop()
        assert batcher.stats.failed == 1 and batcher.stats.answered == 2
        return out

    out = run(main)
    assert out[0] == 1 and out[2] == 3 and isinstance(out[1], KeyError)


def test_a_full_queue_refuses_at_once_with_a_retry_hint() -> None:
    recorder = Recorder()

    async def main() -> None:
        batcher = DynamicBatcher(recorder, BatchPolicy(max_batch_size=1, max_queue=2))
        await batcher.start()
        first = await held(batcher, recorder)
        waiting = [asyncio.create_task(batcher.submit(i)) for i in range(2)]
        await asyncio.sleep(0.005)
        with pytest.raises(QueueFull, match="2 requests are waiting") as refused:
            await batcher.submit(99)
        assert refused.value.retry_after > 0 and batcher.stats.refused == 1
        recorder.gate.set()
        assert await asyncio.gather(first, *waiting) == [-10, 0, 10]
        await batcher.stop()

    run(main)
    assert [99] not in recorder.batches


def test_a_request_that_times_out_while_waiting_is_never_run() -> None:
    recorder = Recorder()

    async def main() -> None:
        batcher = DynamicBatcher(recorder, BatchPolicy(max_batch_size=1, max_wait_ms=0))
        await batcher.start()
        first = await held(batcher, recorder)
        with pytest.raises(RequestTimeout, match=r"no answer within 0\.02 s"):
            await batcher.submit(7, timeout_s=0.02)
        later = asyncio.create_task(batcher.submit(8))
        await asyncio.sleep(0.005)
        recorder.gate.set()
        assert await asyncio.gather(first, later) == [-10, 80]
        await batcher.stop()
        assert batcher.stats.timed_out == 1

    run(main)
    assert [7] not in recorder.batches and recorder.batches == [[-1], [8]]


def test_stop_drains_waiting_requests_then_refuses_new_ones() -> None:
    recorder = Recorder()

    async def main() -> list[int]:
        batcher = DynamicBatcher(recorder, BatchPolicy(max_batch_size=2, max_wait_ms=1000))
        await batcher.start()
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(3)]
        await asyncio.sleep(0.005)
        await batcher.stop()  # does not wait out max_wait_ms: stopping runs what waits
        with pytest.raises(QueueFull, match="not accepting"):
            await batcher.submit(5)
        with pytest.raises(QueueFull, match="shutting down"):  # nor runs anything else
            await batcher.call(len, [1])
        return await asyncio.gather(*tasks)

    assert run(main) == [0, 10, 20]


def test_call_runs_on_the_one_thread_the_batches_run_on() -> None:
    threads: set[int] = set()

    def batch(items: list[int]) -> list[int]:
        threads.add(threading.get_ident())
        return items

    async def main() -> int:
        batcher = DynamicBatcher(batch, BatchPolicy(max_batch_size=1, max_wait_ms=0))
        await batcher.start()
        for i in range(3):
            await batcher.submit(i)
        seen = await batcher.call(threading.get_ident)
        await batcher.stop()
        return seen

    assert threads == {run(main)}


def test_stop_without_draining_fails_the_waiting_requests() -> None:
    recorder = Recorder()

    async def main() -> list[Any]:
        batcher = DynamicBatcher(recorder, BatchPolicy(max_batch_size=1, max_wait_ms=0))
        await batcher.start()
        first = await held(batcher, recorder)
        waiting = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.005)
        stopping = asyncio.create_task(batcher.stop(drain=False))
        await asyncio.sleep(0.005)
        recorder.gate.set()
        await stopping
        return await asyncio.gather(first, waiting, return_exceptions=True)

    first, waiting = run(main)
    assert first == -10 and isinstance(waiting, QueueFull) and "shutting down" in str(waiting)


def test_a_batch_function_with_the_wrong_count_fails_each_request_clearly() -> None:
    async def main() -> Any:
        batcher = DynamicBatcher(lambda items: [], BatchPolicy(max_wait_ms=20), name="m:1")
        await batcher.start()
        out = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
        await batcher.stop()
        return out

    for error in run(main):
        assert isinstance(error, RuntimeError)
        assert "m:1: the batch function gave 0 results for 1 requests" in str(error)


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_batch_size", 0), ("max_wait_ms", -1), ("max_queue", 0), ("timeout_s", 0)],
)
def test_a_bad_policy_is_refused_by_name(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        BatchPolicy(**{field: value})
