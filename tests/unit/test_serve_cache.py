"""The feature-vector cache: content digests, LRU and byte bounds, time to live, invalidation by
version, thread safety; the Redis backend against an in-process fake server (fakeredis)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from abyssal.core.errors import ConfigError
from abyssal.serve.cache import MemoryFeatureCache, RedisFeatureCache, content_digest


def vec(n: int = 4, value: float = 1.0) -> np.ndarray:
    return np.full(n, value, dtype=np.float32)


def test_equal_content_gives_one_digest_and_any_difference_another() -> None:
    a = np.arange(6, dtype=np.float32)
    assert content_digest(a) == content_digest(a.copy()) == content_digest(torch.arange(6.0))
    assert content_digest(a) != content_digest(a.reshape(2, 3))  # shape counts
    assert content_digest(a) != content_digest(a.astype(np.float64))  # dtype counts
    assert content_digest("ab", "c") != content_digest("a", "bc")  # parts are delimited
    assert content_digest({"b": 1, "a": [1, None]}) == content_digest({"a": [1, None], "b": 1})
    assert content_digest(b"x") != content_digest("x")
    with pytest.raises(TypeError, match="cannot hash a set"):
        content_digest({1, 2})


def test_the_least_recently_used_entry_goes_first() -> None:
    cache = MemoryFeatureCache(max_entries=2, max_bytes=None, ttl_s=None)
    cache.put("m:1", "a", vec(value=1))
    cache.put("m:1", "b", vec(value=2))
    assert cache.get("m:1", "a")[0] == 1  # a is now the most recent
    cache.put("m:1", "c", vec(value=3))
    assert cache.get("m:1", "b") is None and cache.get("m:1", "a") is not None
    assert len(cache) == 2 and cache.stats.evictions == 1
    assert (cache.stats.hits, cache.stats.misses) == (2, 1)
    assert cache.stats.hit_rate == pytest.approx(2 / 3)


def test_the_byte_bound_holds_and_an_oversized_value_is_not_stored() -> None:
    cache = MemoryFeatureCache(max_entries=100, max_bytes=64, ttl_s=None)
    for i in range(5):
        cache.put("m:1", str(i), vec(4))  # 16 bytes each
    assert cache.nbytes == 64 and len(cache) == 4 and cache.get("m:1", "0") is None
    cache.put("m:1", "big", vec(32))  # 128 bytes: more than the whole cache
    assert cache.get("m:1", "big") is None and cache.nbytes == 64
    cache.put("m:1", "4", vec(2))  # replacing an entry counts its new size only
    assert cache.nbytes == 56


def test_an_entry_older_than_its_time_to_live_is_a_miss() -> None:
    now = [100.0]
    cache = MemoryFeatureCache(ttl_s=10, clock=lambda: now[0])
    cache.put("m:1", "a", vec())
    now[0] = 109.0
    assert cache.get("m:1", "a") is not None
    now[0] = 110.5
    assert cache.get("m:1", "a") is None and cache.stats.expired == 1 and len(cache) == 0


def test_versions_never_share_entries_and_invalidation_drops_one_version() -> None:
    cache = MemoryFeatureCache()
    key = content_digest("the same text")
    cache.put("text:1", key, vec(value=1))
    assert cache.get("text:2", key) is None  # the next version computes its own
    cache.put("text:2", key, vec(value=2))
    assert cache.invalidate("text:1") == 1
    assert cache.get("text:1", key) is None and cache.get("text:2", key)[0] == 2
    assert cache.invalidate() == 1 and len(cache) == 0 and cache.nbytes == 0


def test_stored_vectors_are_copies_that_cannot_be_changed() -> None:
    cache = MemoryFeatureCache()
    value = vec()
    cache.put("m:1", "a", value)
    value[0] = 99  # the caller's array
    got = cache.get("m:1", "a")
    assert got[0] == 1
    with pytest.raises(ValueError, match="read-only"):
        got[0] = 5


def test_threads_can_share_the_cache() -> None:
    cache = MemoryFeatureCache(max_entries=50, max_bytes=None, ttl_s=None)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(500):
                key = str((worker * 7 + i) % 80)
                if cache.get("m:1", key) is None:
                    cache.put("m:1", key, vec(value=float(key)))
                else:
                    assert cache.get("m:1", key)[0] == float(key)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(cache) == 50 and cache.nbytes == 50 * 16


@pytest.mark.parametrize(
    ("options", "field"),
    [({"max_entries": 0}, "max_entries"), ({"max_bytes": 0}, "max_bytes"), ({"ttl_s": 0}, "ttl")],
)
def test_bad_bounds_are_refused_by_name(options: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        MemoryFeatureCache(**options)


def test_replicas_share_vectors_through_redis() -> None:
    fakeredis = pytest.importorskip("fakeredis")
    server = fakeredis.FakeServer()
    one = RedisFeatureCache(fakeredis.FakeRedis(server=server), ttl_s=60)
    two = RedisFeatureCache(fakeredis.FakeRedis(server=server), ttl_s=60)
    value = np.arange(12, dtype=np.float16).reshape(3, 4)
    key = content_digest(b"an image's bytes")
    assert two.get("defect:2", key) is None
    one.put("defect:2", key, value)
    got = two.get("defect:2", key)  # the other replica
    assert got.dtype == np.float16 and got.shape == (3, 4) and np.array_equal(got, value)
    assert not got.flags.writeable
    assert 0 < one.client.pttl(f"abyssal:features:defect:2:{key}") <= 60_000
    one.put("defect:3", key, value)
    assert two.invalidate("defect:2") == 1
    assert one.get("defect:2", key) is None and one.get("defect:3", key) is not None
    assert (two.stats.hits, two.stats.misses) == (1, 1)
