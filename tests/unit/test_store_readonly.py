"""Reading the store never writes: no write transaction, no file created or changed, a store
that does not exist reads as empty, a store this process cannot write is read through SQLite's
read-only modes; files follow the umask; `check_writable` finds what `train` would hit late."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from abyssal.core import store_schema
from abyssal.core.atomic import write_text_atomic
from abyssal.core.errors import StoreError
from abyssal.core.runs import Run
from abyssal.core.store import ModelStore
from abyssal.core.store_schema import StoreDatabase
from abyssal.train.checkpoint import TrainState, save_checkpoint
from tests.unit.legacy_store_v1 import V1Store


def _snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Every file under ``folder``: (size, mtime in ns, mode)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        st = path.stat()
        out[str(path.relative_to(folder))] = (st.st_size, st.st_mtime_ns, st.st_mode)
    return out


def _read_everything(store: ModelStore) -> list:
    return [
        [mv.ref for mv in store.list_versions()],
        store.names(),
        store.aliases("m"),
        [(m.alias, m.new_version) for m in store.alias_history("m")],
        store.resolve("m:production").ref,
        [getattr(link, "ref", None) for link in store.chain("m:2")],
        store.load_weights("m:1")["w"].tolist(),
        store.artifact_path("m:2", "model.safetensors").name,
        store.compare("m:1", "m:2")["same_weights"],
        store.gc(dry_run=True).count,
        [mv.ref for mv in store.versions_of_run("run-7")],
    ]


@pytest.fixture
def filled(tmp_path: Path) -> ModelStore:
    store = ModelStore(tmp_path / "home")
    store.register("m", {"w": torch.ones(2)}, solution="t", config={}, metrics={}, run_id="run-7")
    store.register("m", {"w": torch.zeros(2)}, solution="t", config={}, metrics={})
    store.set_alias("m", "production", 2)
    return store


def _no_writing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: StoreDatabase) -> None:
        raise AssertionError("a read opened a write transaction")

    monkeypatch.setattr(StoreDatabase, "writing", refuse)


def test_reading_opens_no_write_transaction_and_changes_no_file(filled, monkeypatch) -> None:
    before = _snapshot(filled.root)
    _no_writing(monkeypatch)
    fresh = ModelStore(filled.root)  # a new process's first open checks the schema too
    got = _read_everything(fresh)
    assert got[0] == ["m:1", "m:2"] and got[4] == "m:2" and got[10] == ["m:1"]
    assert _snapshot(filled.root) == before


def test_a_read_connection_cannot_write(filled) -> None:
    with filled.database.reading() as conn, pytest.raises(sqlite3.OperationalError):
        conn.execute(
            "INSERT INTO alias_history (name, alias, changed_at, changed_by) "
            "VALUES ('m', 'x', 'now', 'me')"
        )
    assert [m.alias for m in filled.alias_history("m")] == ["production"]


def test_a_store_that_does_not_exist_reads_as_empty_and_is_not_created(tmp_path) -> None:
    store = ModelStore(tmp_path / "nowhere" / "home")
    assert store.list_versions() == [] and store.names() == []
    assert store.gc(dry_run=True).count == 0
    with pytest.raises(StoreError, match=r"unknown model 'm'.*none: the store is empty"):
        store.resolve("m")
    assert not (tmp_path / "nowhere").exists()
    store.register("m", {"w": torch.ones(1)}, solution="t", config={}, metrics={})
    assert store.resolve("m").ref == "m:1"  # the empty stand-in did not mark the schema ready


def test_a_store_this_process_cannot_write_is_read_read_only(filled, monkeypatch) -> None:
    expected = _read_everything(filled)
    before = _snapshot(filled.root)
    _no_writing(monkeypatch)
    monkeypatch.setattr(store_schema, "can_write", lambda db_path: False)
    opened = []
    real_connect = sqlite3.connect

    def spy(target, *args, **kwargs):
        opened.append(str(target))
        return real_connect(target, *args, **kwargs)

    monkeypatch.setattr(store_schema.sqlite3, "connect", spy)
    assert _read_everything(ModelStore(filled.root)) == expected
    assert opened and all("mode=ro" in target for target in opened)
    changed = {k for k, v in _snapshot(filled.root).items() if before.get(k) != v}
    assert changed <= {"store.db-shm", "store.db-wal"}  # SQLite's own, never the data


def test_a_read_only_store_that_needs_migrating_says_so(tmp_path, monkeypatch) -> None:
    old = V1Store(tmp_path / "old")
    old.register("a", {"w": torch.ones(2)}, "2026-01-01T00:00:00+00:00")
    old.close()
    monkeypatch.setattr(store_schema, "can_write", lambda db_path: False)
    with pytest.raises(StoreError, match=r"schema version 1 .* but it is read-only here"):
        ModelStore(tmp_path / "old").names()
    monkeypatch.undo()
    assert ModelStore(tmp_path / "old").names() == ["a"]  # with write access it migrates


def test_check_writable_finds_a_damaged_database(tmp_path) -> None:
    store = ModelStore(tmp_path / "home")
    store.check_writable()  # a fresh store is fine (and now exists)
    for i in range(20):
        store.register("m", {"w": torch.full((2,), float(i))}, solution="t", config={}, metrics={})
    db = tmp_path / "home" / "store.db"
    data = bytearray(db.read_bytes())
    page = 4096  # page 2, the root of the first table: cell pointers overwritten
    data[page + 8 : page + 40] = b"\xff" * 32
    db.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=r"store\.db.*(is damaged|malformed)"):
        ModelStore(tmp_path / "home").check_writable()
    db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="file is not a database"):
        ModelStore(tmp_path / "home").check_writable()


def test_a_read_only_connection_falls_back_to_immutable(filled, monkeypatch) -> None:
    """Where the WAL index (-shm) can be neither found nor created, mode=ro alone fails."""
    real_connect = sqlite3.connect
    opened = []

    def no_shm(target, *args, **kwargs):
        opened.append(str(target))
        if "mode=ro" in str(target) and "immutable=1" not in str(target):
            raise sqlite3.OperationalError("attempt to write a readonly database")
        return real_connect(target, *args, **kwargs)

    expected = _read_everything(filled)
    monkeypatch.setattr(store_schema, "can_write", lambda db_path: False)
    monkeypatch.setattr(store_schema.sqlite3, "connect", no_shm)
    assert _read_everything(ModelStore(filled.root)) == expected
    assert any(t.endswith("mode=ro&immutable=1") for t in opened)


def test_check_writable_names_a_home_that_is_a_file(tmp_path) -> None:
    (tmp_path / "home").write_text("oops")
    with pytest.raises(StoreError, match="is a file, not a folder"):
        ModelStore(tmp_path / "home").check_writable()
    with pytest.raises(StoreError, match="is a file, not a folder"):
        ModelStore(tmp_path / "home").names()


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def test_files_follow_the_umask_and_blobs_drop_only_the_write_bits(tmp_path) -> None:
    with _umask(0o027):
        store = ModelStore(tmp_path / "home")
        mv = store.register("m", {"w": torch.ones(2)}, solution="t", config={}, metrics={})
        run = Run.create("train", "t", {"a": 1}, root=tmp_path / "home")
        run.log("hello")
        run.log_metrics({"step": 1})
        save_checkpoint(run.checkpoint_dir, "last", model=torch.nn.Linear(1, 1), state=TrainState())
        write_text_atomic(tmp_path / "plain.txt", "x")
        out = store.materialize(mv.ref, tmp_path / "out")
    blob = store.artifact_path(mv.ref, "model.safetensors")
    assert blob.stat().st_mode & 0o777 == 0o440
    assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o440  # a link keeps it
    run_files = [p for p in run.path.rglob("*") if p.is_file()]
    assert {p.suffix for p in run_files} >= {".json", ".yaml", ".txt", ".jsonl", ".safetensors"}
    assert {p.name: p.stat().st_mode & 0o777 for p in run_files} == {
        p.name: 0o640 for p in run_files
    }
    assert (tmp_path / "plain.txt").stat().st_mode & 0o777 == 0o640


def test_writing_a_store_this_process_may_only_read_says_so(filled, monkeypatch) -> None:
    monkeypatch.setattr(store_schema.os, "access", lambda path, mode: mode != os.W_OK)
    store = ModelStore(filled.root)
    for write in (store.check_writable, lambda: store.set_alias("m", "candidate", 1)):
        with pytest.raises(StoreError, match=r"cannot be written here \(permission denied\)"):
            write()
    assert store.resolve("m:production").ref == "m:2"  # reading still works
