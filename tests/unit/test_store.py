"""The model store: versions, refs, aliases, weights integrity, lineage and garbage collection."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
import torch

import abyssal
from abyssal.core import lineage as lineage_module
from abyssal.core.errors import StoreError
from abyssal.core.lineage import code_lineage
from abyssal.core.store import SCHEMA_VERSION, ModelStore, ModelVersion


def _weights(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(3, 2, generator=gen), "b": torch.zeros(2)}


def _register(store: ModelStore, name: str = "m", seed: int = 0, **kwargs) -> ModelVersion:
    args = {"solution": "fraud", "config": {"lr": 0.1}, "metrics": {"auc": 0.5}}
    return store.register(name, _weights(seed), **{**args, **kwargs})


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "store")


def test_register_resolve_load_round_trip_keeps_values_and_dtypes(store: ModelStore) -> None:
    state = {
        "f32": torch.randn(4, 3),
        "f16": torch.randn(5).half(),
        "bf16": torch.randn(2, 2).bfloat16(),
        "i64": torch.arange(6).reshape(2, 3),
        "mask": torch.tensor([True, False]),
        "strided": torch.randn(4, 6)[:, ::2],  # not contiguous
    }
    mv = store.register(
        "fraud-gnn",
        state,
        solution="fraud",
        config={"model": {"hidden": 64}},
        metrics={"auc": torch.tensor(0.91), "n": 7},
        lineage={"data_fingerprint": "abc123"},
        run_id="run-1",
    )
    assert mv.ref == "fraud-gnn:1"
    got = store.resolve("fraud-gnn:1")
    assert got == mv
    assert (got.solution, got.run_id, got.aliases) == ("fraud", "run-1", ())
    assert got.config == {"model": {"hidden": 64}}
    assert got.metrics == {"auc": pytest.approx(0.91), "n": 7}
    assert got.lineage["data_fingerprint"] == "abc123"
    assert got.lineage["package_version"] == abyssal.__version__
    assert datetime.fromisoformat(got.created_at).utcoffset().total_seconds() == 0
    loaded = store.load_weights("fraud-gnn:1")
    assert sorted(loaded) == sorted(state)
    for key, tensor in state.items():
        assert loaded[key].dtype == tensor.dtype
        assert torch.equal(loaded[key], tensor)
    assert json.loads(json.dumps(mv.to_dict()))["ref"] == "fraud-gnn:1"


def test_layout_is_sqlite_in_wal_mode_plus_content_addressed_blobs(store: ModelStore) -> None:
    mv = _register(store)
    blob = store.root / "blobs" / mv.weights_sha256[:2] / f"{mv.weights_sha256}.safetensors"
    assert _files(store.root / "blobs") == [blob]
    conn = sqlite3.connect(store.root / "store.db")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    finally:
        conn.close()


def test_root_defaults_to_abyssal_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ABYSSAL_HOME", str(tmp_path / "home"))
    assert ModelStore().root == tmp_path / "home"
    monkeypatch.delenv("ABYSSAL_HOME")
    assert ModelStore().root == Path("~/.abyssal").expanduser()


def test_versions_are_numbered_per_name(store: ModelStore) -> None:
    refs = [_register(store, name, seed).ref for name, seed in [("a", 0), ("a", 1), ("b", 2)]]
    refs.append(_register(store, "a", 3).ref)
    assert refs == ["a:1", "a:2", "b:1", "a:3"]
    assert store.names() == ["a", "b"]
    assert [mv.ref for mv in store.list_versions()] == ["a:1", "a:2", "a:3", "b:1"]
    assert [mv.version for mv in store.list_versions("a")] == [1, 2, 3]
    assert store.get("a", 2).weights_sha256 == store.resolve("a:2").weights_sha256


def test_identical_weights_share_one_blob(store: ModelStore) -> None:
    first, second = _register(store, seed=5), _register(store, seed=5)
    assert (first.version, second.version) == (1, 2)
    assert first.weights_sha256 == second.weights_sha256
    assert len(_files(store.root / "blobs")) == 1


def test_latest_and_alias_resolution_and_moving_an_alias(store: ModelStore) -> None:
    for seed in range(3):
        _register(store, seed=seed)
    assert store.resolve("m").version == 3
    assert store.resolve("m:latest").version == 3
    store.set_alias("m", "production", 1)
    assert store.resolve("m:production").version == 1
    assert store.resolve("m:1").aliases == ("production",)
    store.set_alias("m", "production", 2)
    store.set_alias("m", "candidate", 3)
    assert store.resolve("m:production").version == 2
    assert store.aliases("m") == {"candidate": 3, "production": 2}
    assert store.get("m", 1).aliases == ()
    store.remove_alias("m", "candidate")
    assert store.aliases("m") == {"production": 2}
    moves = [(h.alias, h.old_version, h.new_version) for h in store.alias_history("m")]
    assert moves == [
        ("production", None, 1),
        ("production", 1, 2),
        ("candidate", None, 3),
        ("candidate", 3, None),
    ]
    assert all("@" in h.changed_by and h.changed_at for h in store.alias_history("m"))


@pytest.mark.parametrize("alias", ["latest", "3", "1abc", "bad alias", "a:b", ""])
def test_bad_alias_names_are_refused(store: ModelStore, alias: str) -> None:
    _register(store)
    with pytest.raises(StoreError, match="bad alias"):
        store.set_alias("m", alias, 1)
    assert store.aliases("m") == {}


def test_alias_must_point_at_an_existing_version(store: ModelStore) -> None:
    _register(store)
    with pytest.raises(StoreError, match=r"no version or alias '7'; versions: 1;"):
        store.set_alias("m", "production", 7)
    with pytest.raises(StoreError, match="unknown model 'other'"):
        store.set_alias("other", "production", 1)
    with pytest.raises(StoreError, match="no version or alias 'staging'"):
        store.remove_alias("m", "staging")


def test_unknown_refs_list_the_choices(store: ModelStore) -> None:
    with pytest.raises(StoreError, match=r"unknown model 'm'.*store is empty"):
        store.resolve("m")
    _register(store, "alpha")
    _register(store, "beta")
    _register(store, "beta", seed=1)
    store.set_alias("beta", "production", 2)
    with pytest.raises(StoreError, match=r"unknown model 'gamma'.*known models: alpha, beta"):
        store.resolve("gamma:1")
    with pytest.raises(
        StoreError,
        match=r"'beta' has no version or alias 'staging'; versions: 1, 2; "
        r"aliases: production -> 2",
    ):
        store.resolve("beta:staging")
    with pytest.raises(StoreError, match=r"no version or alias '9'; versions: 1, 2"):
        store.get("beta", 9)
    with pytest.raises(StoreError, match="ends with ':'"):
        store.resolve("beta:")
    with pytest.raises(StoreError, match="unknown model 'gamma'"):
        store.list_versions("gamma")


@pytest.mark.parametrize("name", ["", "-lead", ".hidden", "has space", "a:b", "a/b", "x" * 65, 3])
def test_bad_model_names_are_refused(store: ModelStore, name: object) -> None:
    with pytest.raises(StoreError, match="bad model name"):
        store.register(name, _weights(), solution="s", config={}, metrics={})
    assert not store.root.exists() or store.names() == []


@pytest.mark.parametrize("value", [float("nan"), float("inf"), torch.tensor(float("-inf"))])
def test_non_finite_metric_is_refused_before_anything_is_written(
    store: ModelStore, value: object
) -> None:
    _register(store)
    with pytest.raises(StoreError, match=r"metric 'loss' is .*must be finite"):
        _register(store, seed=1, metrics={"auc": 0.5, "loss": value})
    assert [mv.ref for mv in store.list_versions()] == ["m:1"]
    assert len(_files(store.root / "blobs")) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metrics": {"auc": [0.1, 0.2]}}, "metric 'auc' must be a number"),
        ({"config": {"fn": print}}, "config is not JSON-serialisable"),
        ({"config": {"lr": float("nan")}}, "config is not JSON-serialisable"),
        ({"lineage": {"parent": 3}}, "lineage 'parent' must be a ref"),
        ({"lineage": {"seen": {1, 2}}}, "lineage is not JSON-serialisable"),
        ({"solution": ""}, "solution must be a non-empty string"),
    ],
)
def test_bad_metadata_is_refused_and_writes_nothing(
    tmp_path: Path, kwargs: dict, message: str
) -> None:
    store = ModelStore(tmp_path)
    with pytest.raises(StoreError, match=message):
        _register(store, **kwargs)
    assert _files(tmp_path / "blobs") == []


@pytest.mark.parametrize(
    ("state_dict", "message"),
    [
        ({}, "non-empty dict"),
        ({"w": {1.0, 2.0}}, r"state_dict\['w'\] has type set; storable values are tensors"),
        ({"w": (torch.ones(1), object())}, r"state_dict\['w'\]\[1\] has type object"),
        ({1: torch.ones(1)}, "key 1 is not a string"),
        ({"w": torch.ones(2).to_sparse()}, r"state_dict\['w'\] must be a dense tensor"),
    ],
)
def test_bad_state_dicts_are_refused(store: ModelStore, state_dict: dict, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        store.register("m", state_dict, solution="s", config={}, metrics={})


def test_shared_storage_tensors_still_save(store: ModelStore) -> None:
    embedding = torch.nn.Embedding(5, 4)
    head = torch.nn.Linear(4, 5, bias=False)
    head.weight = embedding.weight  # tied weights: two keys, one storage
    model = torch.nn.Sequential(embedding, head)
    state = {**model.state_dict(), "row": embedding.weight.data[1], "grad": torch.ones(2) * 2}
    state["grad"].requires_grad_(True)
    mv = store.register("tied", state, solution="s", config={}, metrics={})
    loaded = store.load_weights(mv)
    assert torch.equal(loaded["0.weight"], loaded["1.weight"])
    assert torch.equal(loaded["row"], embedding.weight.data[1])
    assert loaded["0.weight"].data_ptr() != loaded["1.weight"].data_ptr()


def test_parent_must_exist_and_is_stored_as_a_version_ref(store: ModelStore) -> None:
    _register(store, "base")
    store.set_alias("base", "production", 1)
    with pytest.raises(StoreError, match=r"lineage 'parent' does not exist: .*'base' has no"):
        _register(store, "tuned", lineage={"parent": "base:4"})
    with pytest.raises(StoreError, match="lineage 'parent' does not exist: unknown model 'nope'"):
        _register(store, "tuned", lineage={"parent": "nope"})
    assert store.names() == ["base"]
    child = _register(store, "tuned", lineage={"parent": "base:production", "git_commit": "x"})
    assert child.lineage["parent"] == "base:1"
    assert child.lineage["git_commit"] == "x"  # caller keys win over code lineage
    assert child.lineage["package_version"] == abyssal.__version__


def test_compare_reports_metric_deltas_config_changes_and_weights(store: ModelStore) -> None:
    _register(
        store,
        seed=1,
        config={"lr": 0.1, "model": {"hidden": 64, "layers": 2}, "tags": ["a"]},
        metrics={"auc": 0.5, "loss": 2.0, "note": "x"},
        lineage={"data_fingerprint": "d1"},
    )
    _register(
        store,
        seed=2,
        config={"lr": 0.1, "model": {"hidden": 128, "layers": 2}, "tags": ["a", "b"], "new": 1},
        metrics={"auc": 0.75, "loss": 1.5, "note": "y", "f1": 0.6},
    )
    _register(store, seed=2)
    out = store.compare("m:1", "m:2")
    assert (out["a"], out["b"]) == ("m:1", "m:2")
    assert out["metrics"]["auc"] == {"a": 0.5, "b": 0.75, "delta": 0.25}
    assert out["metrics"]["loss"] == {"a": 2.0, "b": 1.5, "delta": -0.5}
    assert out["metrics"]["note"] == {"a": "x", "b": "y", "delta": None}
    assert out["metrics"]["f1"] == {"a": None, "b": 0.6, "delta": None}
    assert out["config_changes"] == {
        "model.hidden": (64, 128),
        "new": (None, 1),
        "tags": (["a"], ["a", "b"]),
    }
    assert out["lineage"]["a"]["data_fingerprint"] == "d1"
    assert "data_fingerprint" not in out["lineage"]["b"]
    assert out["same_weights"] is False
    assert store.compare("m:2", "m:latest")["same_weights"] is True


def test_corrupted_blob_is_detected(store: ModelStore) -> None:
    mv = _register(store)
    blob = next(iter(_files(store.root / "blobs")))
    assert blob.stat().st_mode & 0o777 == 0o444  # blobs are read-only
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=r"m:1: weights file .* is corrupted"):
        store.load_weights("m:1")
    blob.unlink()
    with pytest.raises(StoreError, match="is missing"):
        store.load_weights(mv)


def test_gc_removes_orphans_and_stale_temp_files_only(store: ModelStore) -> None:
    mv = _register(store)
    shard = store.root / "blobs" / "ab"
    shard.mkdir()
    orphan = shard / ("ab" + "0" * 62 + ".safetensors")
    orphan.write_bytes(b"orphan")
    stale, fresh = shard / ".ab00.1.tmp", shard / ".ab00.2.tmp"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"in flight")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    assert store.gc().removed == 2
    assert not orphan.exists() and not stale.exists() and fresh.exists()
    assert torch.equal(store.load_weights(mv)["w"], _weights()["w"])
    assert store.gc().removed == 0


def test_register_rewrites_a_blob_removed_between_write_and_commit(
    store: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = ModelStore._commit_version

    def gc_then_commit(self: ModelStore, record: dict, written: list) -> int:
        assert self.gc().removed == 1  # a concurrent gc sees the not-yet-referenced file
        return original(self, record, written)

    monkeypatch.setattr(ModelStore, "_commit_version", gc_then_commit)
    mv = _register(store)
    assert torch.equal(store.load_weights(mv)["w"], _weights()["w"])


def test_versions_are_immutable_even_through_raw_sql(store: ModelStore) -> None:
    _register(store)
    conn = sqlite3.connect(store.root / "store.db")
    try:
        with pytest.raises(sqlite3.DatabaseError, match="immutable"):
            conn.execute("UPDATE versions SET metrics = '{}'")
        with pytest.raises(sqlite3.DatabaseError, match="immutable"):
            conn.execute("DELETE FROM versions")
    finally:
        conn.close()
    assert store.resolve("m:1").metrics == {"auc": 0.5}


def test_store_from_a_newer_abyssal_is_refused(tmp_path: Path) -> None:
    _register(ModelStore(tmp_path))
    conn = sqlite3.connect(tmp_path / "store.db")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreError, match="schema version 99, newer"):
        ModelStore(tmp_path).names()


def test_code_lineage_in_this_checkout() -> None:
    info = code_lineage()
    assert info["package_version"] == abyssal.__version__
    source = Path(abyssal.__file__).parent
    tracked = subprocess.run(
        ["git", "ls-files", "--error-unmatch", "__init__.py"], cwd=source, capture_output=True
    )
    if tracked.returncode != 0:
        assert info["git_commit"] is None and info["git_dirty"] is None
    else:
        assert len(info["git_commit"]) == 40 and int(info["git_commit"], 16) >= 0
        assert isinstance(info["git_dirty"], bool)


def test_code_lineage_without_git(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_git(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError("git")

    monkeypatch.setattr(lineage_module.subprocess, "run", no_git)
    assert code_lineage() == {
        "package_version": abyssal.__version__,
        "git_commit": None,
        "git_dirty": None,
    }


def test_code_lineage_when_git_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    def slow_git(cmd: list[str], **kwargs: object) -> None:
        assert kwargs["timeout"] == 5.0
        raise subprocess.TimeoutExpired(cmd, kwargs["timeout"])

    monkeypatch.setattr(lineage_module.subprocess, "run", slow_git)
    assert code_lineage()["git_commit"] is None
