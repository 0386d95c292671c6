"""A store written by abyssal 0.1.0 (schema 1) migrates to schema 2, in one transaction, on open."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import torch

from abyssal.core.errors import StoreError
from abyssal.core.store import SCHEMA_VERSION, ModelStore
from tests.unit.legacy_store_v1 import V1Store

T0, T1, T2 = "2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00", "2026-01-03T00:00:00+00:00"


def _weights(value: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((2, 3), value), "b": torch.arange(3)}


@pytest.fixture
def old_store(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A schema-1 store: a:1, a:2, b:1; a:production moved 1 -> 2, b:candidate set."""
    root = tmp_path / "old"
    v1 = V1Store(root)
    shas = {
        "a:1": v1.register("a", _weights(1.0), T0),
        "a:2": v1.register("a", _weights(2.0), T1),
        "b:1": v1.register("b", _weights(1.0), T2),  # same weights as a:1: one blob
    }
    v1.set_alias("a", "production", None, 1, T0)
    v1.set_alias("a", "production", 1, 2, T1)
    v1.set_alias("b", "candidate", None, 1, T2)
    v1.close()
    return root, shas


def _user_version(root: Path) -> int:
    conn = sqlite3.connect(root / "store.db")
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


def test_versions_aliases_and_history_survive_the_migration(old_store) -> None:
    root, shas = old_store
    assert _user_version(root) == 1
    store = ModelStore(root)
    versions = store.list_versions()
    assert _user_version(root) == SCHEMA_VERSION == 2
    assert [mv.ref for mv in versions] == ["a:1", "a:2", "b:1"]
    assert [mv.created_at for mv in versions] == [T0, T1, T2]
    for mv in versions:
        assert (mv.config, mv.metrics, mv.run_id, mv.base) == (
            {"lr": 0.1},
            {"auc": 0.5},
            "run-1",
            None,
        )
        assert mv.lineage == {"package_version": "0.1.0"}
        (weights,) = mv.artifacts
        blob = root / "blobs" / shas[mv.ref][:2] / f"{shas[mv.ref]}.safetensors"
        assert (weights.name, weights.role, weights.format) == (
            "model.safetensors",
            "weights",
            "safetensors",
        )
        assert weights.sha256 == mv.weights_sha256 == shas[mv.ref]
        assert weights.size == blob.stat().st_size
        assert store.artifact_path(mv, "model.safetensors") == blob
    assert torch.equal(store.load_weights("a:production")["w"], torch.full((2, 3), 2.0))
    assert torch.equal(store.load_weights("b:candidate")["b"], torch.arange(3))
    assert store.aliases("a") == {"production": 2} and store.aliases("b") == {"candidate": 1}
    moves = [
        (m.alias, m.old_version, m.new_version, m.changed_at) for m in store.alias_history("a")
    ]
    assert moves == [("production", None, 1, T0), ("production", 1, 2, T1)]


def test_new_registrations_continue_the_numbering_after_migration(old_store) -> None:
    root, _ = old_store
    store = ModelStore(root)
    mv = store.register("a", _weights(3.0), solution="fraud", config={}, metrics={})
    child = store.register(
        "a", _weights(4.0), base="a:production", solution="fraud", config={}, metrics={}
    )
    assert (mv.ref, child.ref, child.base, child.lineage["parent"]) == ("a:3", "a:4", "a:2", "a:2")
    store.set_alias("a", "production", 3)
    assert [m.new_version for m in store.alias_history("a")] == [1, 2, 3]
    assert store.gc().removed == 0  # every old blob is still referenced through its artifact
    assert torch.equal(store.load_weights("a:1")["w"], torch.full((2, 3), 1.0))


def test_migrated_rows_stay_immutable(old_store) -> None:
    root, _ = old_store
    ModelStore(root).names()
    conn = sqlite3.connect(root / "store.db")
    try:
        for statement in (
            "UPDATE artifacts SET size = 0",
            "DELETE FROM artifacts",
            "DELETE FROM versions",
        ):
            with pytest.raises(sqlite3.DatabaseError, match="immutable"):
                conn.execute(statement)
    finally:
        conn.close()


def test_a_blob_missing_before_migration_gets_no_size_and_a_clear_error(old_store) -> None:
    root, shas = old_store
    blob = root / "blobs" / shas["a:2"][:2] / f"{shas['a:2']}.safetensors"
    blob.unlink()
    store = ModelStore(root)
    assert store.resolve("a:2").artifacts[0].size is None
    with pytest.raises(
        StoreError, match=r"a:2: weights file '.*' \(artifact 'model.safetensors'\) is missing"
    ):
        store.load_weights("a:2")


def test_a_failed_migration_changes_nothing(old_store, monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = old_store

    def broken(self: ModelStore, sha256: str) -> int:
        raise OSError("disk on fire")

    monkeypatch.setattr(ModelStore, "_legacy_weights_size", broken)
    with pytest.raises(OSError, match="disk on fire"):
        ModelStore(root).names()
    assert _user_version(root) == 1
    conn = sqlite3.connect(root / "store.db")
    try:
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        columns = [row[1] for row in conn.execute("PRAGMA table_info(versions)")]
    finally:
        conn.close()
    assert "artifacts" not in tables and "base" not in columns
    monkeypatch.undo()
    assert ModelStore(root).names() == ["a", "b"]  # a later open migrates cleanly
    assert _user_version(root) == 2
