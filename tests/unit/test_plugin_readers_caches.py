"""Plugin table readers (``abyssal.readers``) and feature-cache backends (``abyssal.caches``):
a reader picked by the longest matching suffix, checked as the built-in formats are, used by
training and prediction; a failing reader or a broken plugin named by its package; a cache
backend picked by the URL's scheme, used by the service, and a clear error for an unknown
scheme. Packages are faked as ``*.dist-info`` folders on ``sys.path``."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from abyssal.core.errors import ConfigError, DataError, RegistryError
from abyssal.data.tables import (
    READERS,
    read_table,
    table_format,
    table_suffixes,
    trained_table,
    write_table,
)
from abyssal.serve.cache import CACHES, MemoryFeatureCache, open_cache
from tests.plugin_fakes import fake_package, rediscover

READER_MODULE = """
import pandas as pd

def read_psv(path):
    frame = pd.read_csv(path, sep="|", dtype=str, keep_default_na=False, na_values=[""])
    frame.index = frame.index + 100  # read_table gives a fresh index
    return frame

def read_rows(path):  # "x.psv.rows": the longer suffix wins over "psv"
    return pd.read_json(path, lines=True)

def fail(path):
    raise ValueError("bad magic bytes")

def not_a_frame(path):
    return [1, 2]
"""

CACHE_MODULE = """
from abyssal.serve.cache import CacheStats

class DictCache:
    opened = []

    def __init__(self, url, entries, ttl_s):
        self.url, self.entries, self.ttl_s = url, entries, ttl_s
        self.stats, self.store = CacheStats(), {}
        DictCache.opened.append(self)

    def get(self, version, digest, count_miss=True):
        found = self.store.get((version, digest))
        if found is None:
            self.stats.misses += count_miss
        else:
            self.stats.hits += 1
        return found

    def put(self, version, digest, value):
        self.store[(version, digest)] = value.copy()

    def invalidate(self, version=None):
        keys = [k for k in self.store if version is None or k[0] == version]
        for key in keys:
            del self.store[key]
        return len(keys)

    def __len__(self):
        return len(self.store)

def open_dict(url, *, entries, ttl_s):
    return DictCache(url, entries, ttl_s)

def refuse(url, *, entries, ttl_s):
    raise ConnectionError("no route to kv.example")

def not_a_cache(url, *, entries, ttl_s):
    return 42
"""


@pytest.fixture
def readers(site: Path) -> Iterator[Path]:
    """acme-formats 1.2 reads .psv, .psv.rows and two failing suffixes; acme-broken 0.3 (.brk)
    fails to import."""
    (site / "acme_formats.py").write_text(READER_MODULE)
    (site / "acme_broken.py").write_text("raise ImportError('libfw.so: cannot open')\n")
    entries = {"psv": "acme_formats:read_psv", "psv.rows": "acme_formats:read_rows",
               "bad": "acme_formats:fail", "odd": "acme_formats:not_a_frame"}  # fmt: skip
    fake_package(site, "acme-formats", "1.2", entries, group="abyssal.readers")
    fake_package(site, "acme-broken", "0.3", {"brk": "acme_broken:read"}, group="abyssal.readers")
    with rediscover(READERS):
        yield site


@pytest.fixture
def caches(site: Path) -> Iterator[Path]:
    """acme-kv 2.0 adds the schemes acme (works), acme-down (its factory fails) and acme-odd
    (returns no cache)."""
    (site / "acme_kv.py").write_text(CACHE_MODULE)
    entries = {"acme": "acme_kv:open_dict", "acme-down": "acme_kv:refuse",
               "acme-odd": "acme_kv:not_a_cache"}  # fmt: skip
    fake_package(site, "acme-kv", "2.0", entries, group="abyssal.caches")
    with rediscover(CACHES):
        yield site


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def test_a_plugin_reader_reads_its_suffix_and_its_frame_is_checked_like_a_builtin(
    readers: Path, tmp_path: Path
) -> None:
    path = write(tmp_path / "tx.PSV", """
        user_id | amount
        007|1.5
        008|
    """)  # fmt: skip
    assert table_format(path) == "psv"  # case-insensitive
    assert "acme_formats" not in sys.modules  # matching a suffix imports nothing
    frame = read_table(path)
    assert list(frame.columns) == ["user_id", "amount"]  # headers stripped
    assert frame.index.tolist() == [0, 1]  # a fresh index
    assert frame["user_id"].tolist() == ["007", "008"] and frame["amount"].isna().tolist()[1]
    assert READERS.origin("psv").package == "acme-formats"
    assert {".psv", ".psv.rows", ".brk"} <= set(table_suffixes())
    assert table_suffixes()[:4] == (".csv", ".csv.gz", ".parquet", ".pq")

    rows = write(tmp_path / "tx.psv.rows", '{"a": 1}\n{"a": 2}\n')
    assert table_format(rows) == "psv.rows"  # the longest matching suffix
    assert read_table(rows)["a"].tolist() == [1, 2]

    empty = write(tmp_path / "empty.psv", "a|b\n")
    with pytest.raises(DataError, match=r"empty\.psv: no rows"):
        read_table(empty)
    twice = write(tmp_path / "twice.psv", " a |a\n1|2\n")
    with pytest.raises(DataError, match="names column 'a' twice"):
        read_table(twice)
    with pytest.raises(DataError, match="names can be given for a CSV file only"):
        read_table(path, names=["x", "y"])
    with pytest.raises(DataError, match=r"cannot write a 'psv' table.*\.csv, \.csv\.gz"):
        write_table(frame, tmp_path / "out.psv")


def test_a_failing_reader_and_a_broken_plugin_name_the_file_and_the_package(
    readers: Path, tmp_path: Path
) -> None:
    bad = write(tmp_path / "x.bad", "anything\n")
    with pytest.raises(DataError) as caught:
        read_table(bad)
    assert str(caught.value) == (
        f"{bad}: the table reader 'bad' from the plugin package acme-formats 1.2 failed: "
        "ValueError: bad magic bytes"
    )
    odd = write(tmp_path / "x.odd", "anything\n")
    with pytest.raises(DataError, match=r"'odd' from the plugin package acme-formats 1\.2 "
                       r"returned list; expected a pandas DataFrame"):  # fmt: skip
        read_table(odd)
    broken = write(tmp_path / "export.brk", "anything\n")
    with pytest.raises(DataError) as caught:
        read_table(broken)
    message = str(caught.value)
    assert message.startswith(f"{broken}: cannot read it: table reader 'brk' from the plugin")
    assert "acme-broken 0.3" in message and "libfw.so: cannot open" in message
    assert read_table(write(tmp_path / "fine.psv", "a\n1\n"))["a"].tolist() == ["1"]


def test_an_unsupported_suffix_lists_the_builtin_and_the_plugin_suffixes(
    readers: Path, tmp_path: Path
) -> None:
    with pytest.raises(DataError) as caught:
        read_table(tmp_path / "tx.xlsx")
    message = str(caught.value)
    assert "unsupported file type; expected one of .csv, .csv.gz, .parquet, .pq" in message
    assert ".psv (acme-formats)" in message and ".brk (acme-broken)" in message


def test_a_plugin_claiming_a_builtin_suffix_is_a_conflict_and_csv_still_reads(
    site: Path, tmp_path: Path
) -> None:
    (site / "acme_csv.py").write_text("def read(path):\n    raise AssertionError\n")
    fake_package(site, "acme-csv", "1.0", {"csv": "acme_csv:read"}, group="abyssal.readers")
    with rediscover(READERS):
        assert READERS.conflicts() == {"csv": "abyssal and acme-csv 1.0"}
        assert read_table(write(tmp_path / "t.csv", "a\n1\n"))["a"].tolist() == ["1"]


def test_a_plugin_format_trains_and_predicts_through_the_cli(
    readers: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from abyssal.cli.main import main
    from abyssal.core.store import ModelStore

    monkeypatch.setenv("ABYSSAL_HOME", str(tmp_path / "home"))
    assert main(["generate", "tabular", "--out", str(tmp_path / "demo")]) == 0
    for name in ("train", "new_rows"):
        frame = pd.read_csv(tmp_path / "demo" / f"{name}.csv", dtype=str, keep_default_na=False)
        frame.to_csv(tmp_path / f"{name}.psv", sep="|", index=False)
    fast = ["train.epochs=2", "train.progress=false", "baselines=false", "model.hidden=16"]
    table = tmp_path / "train.psv"
    assert main(["train", "tabular", "data.source=file", f"data.path={table}",
                 "data.target=diagnosis", "data.ignore=[id]", *fast]) == 0  # fmt: skip
    version = ModelStore().resolve("tabular:latest")
    assert trained_table(version.config) == table  # monitoring and drift find it again
    out = tmp_path / "scores.csv"
    assert main(["predict", "tabular", "--model", "tabular:latest", "--input",
                 str(tmp_path / "new_rows.psv"), "--out", str(out)]) == 0  # fmt: skip
    assert len(read_table(out)) == len(read_table(tmp_path / "new_rows.psv"))


def test_the_url_scheme_picks_a_plugin_cache_backend(caches: Path) -> None:
    cache = open_cache("acme://kv.example:7000/features", entries=50, ttl_s=None)
    assert type(cache).__name__ == "DictCache" and sys.modules["acme_kv"]
    assert (cache.url, cache.entries, cache.ttl_s) == ("acme://kv.example:7000/features", 50, None)
    assert CACHES.origin("acme").package == "acme-kv"
    memory = open_cache("memory://", entries=7, ttl_s=60)
    assert isinstance(memory, MemoryFeatureCache) and memory.max_entries == 7
    assert isinstance(open_cache("memory", entries=7), MemoryFeatureCache)


def test_an_unknown_scheme_lists_the_backends_and_a_failing_plugin_names_its_package(
    caches: Path,
) -> None:
    with pytest.raises(ConfigError) as caught:
        open_cache("memcached://:secret@host:11211")
    message = str(caught.value)
    assert "no backend for 'memcached'" in message and "secret" not in message
    assert "acme (acme-kv 2.0)" in message and "memory, redis" in message
    with pytest.raises(ConfigError, match=r"'acme-down' from the plugin package acme-kv 2\.0 "
                       r"failed: ConnectionError: no route to kv\.example"):  # fmt: skip
        open_cache("acme-down://kv.example")
    with pytest.raises(ConfigError, match=r"returned int, which has no get, put, invalidate"):
        open_cache("acme-odd://kv.example")


def test_a_plugin_cache_that_fails_to_import_names_its_package(site: Path) -> None:
    (site / "acme_gone.py").write_text("raise ImportError('no kv client')\n")
    fake_package(site, "acme-gone", "0.9", {"gone": "acme_gone:open"}, group="abyssal.caches")
    gone = r"'gone://h'.*plugin package acme-gone 0\.9"
    with rediscover(CACHES), pytest.raises(RegistryError, match=gone):
        open_cache("gone://h")


def serve_args(*argv: str) -> Any:
    from abyssal.cli.main import build_parser

    return build_parser().parse_args(["serve", "text:production", *argv])


def test_serve_cache_and_redis_flags(caches: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from abyssal.cli.serve import feature_cache

    cache = feature_cache(serve_args("--cache", "acme://kv:1/0", "--cache-entries", "9"))
    assert type(cache).__name__ == "DictCache" and cache.entries == 9
    default = feature_cache(serve_args())
    assert isinstance(default, MemoryFeatureCache) and default.max_entries == 10_000
    assert feature_cache(serve_args("--cache-entries", "0")) is None
    with pytest.raises(SystemExit):
        serve_args("--cache", "memory://", "--redis", "redis://h:6379/0")
    assert "not allowed with argument" in capsys.readouterr().err
    pytest.importorskip("redis")
    from abyssal.serve.cache import RedisFeatureCache

    shared = feature_cache(serve_args("--redis", "redis://127.0.0.1:6399/2"))  # not connected
    assert isinstance(shared, RedisFeatureCache) and shared.ttl_s == 3600.0
    assert isinstance(feature_cache(serve_args("--cache", "redis://h/0")), RedisFeatureCache)


def test_the_service_counts_hits_in_a_plugin_cache(caches: Path) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    pytest.importorskip("prometheus_client")
    from fastapi.testclient import TestClient

    from abyssal.serve.app import ServedModel, ServeSettings, create_app
    from tests.unit.test_serve_app import CachingDoubler

    cache = open_cache("acme://kv.example", entries=100, ttl_s=60)
    predictor = CachingDoubler("double:1")
    app = create_app([ServedModel("double", "double:1", predictor)], ServeSettings(cache=cache))
    with TestClient(app) as client:
        first = client.post("/v1/models/double/predict", json={"x": 3})
        again = client.post("/v1/models/double/predict", json={"x": 3})
        metrics = client.get("/metrics").text
    assert first.json()["predictions"] == again.json()["predictions"]
    assert predictor.cache is cache and predictor.computed == 1
    assert cache.stats.hits == 1 and len(cache) == 1
    assert 'abyssal_feature_cache{what="hits"} 1.0' in metrics
