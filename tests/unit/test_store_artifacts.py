"""Typed artifacts in the model store: sources, records, files, bases, chains, materialize, gc."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from abyssal.core import store as store_module
from abyssal.core.artifacts import ArtifactSource, ExternalBase
from abyssal.core.errors import StoreError
from abyssal.core.store import ModelStore

META = {"solution": "text", "config": {}, "metrics": {}}


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "store")


def _blobs(store: ModelStore) -> list[Path]:
    folder = store.root / "blobs"
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _adapter_sources(tmp_path: Path) -> list[ArtifactSource]:
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x07onnx-bytes")
    return [
        ArtifactSource.tensors(
            "adapter_model.safetensors", "adapter", {"lora_a": torch.ones(2, 3)}
        ),
        ArtifactSource.json("adapter_config.json", "aux", {"r": 2, "target_modules": ["q"]}),
        ArtifactSource.file("model.onnx", "onnx", onnx),
        ArtifactSource.bytes("vocab.txt", "tokenizer", b"[PAD]\n[UNK]\n", "text"),
    ]


def test_a_version_holds_typed_content_addressed_artifacts(store: ModelStore, tmp_path) -> None:
    base = store.register("text", {"w": torch.zeros(3)}, **META)
    mv = store.register("text-lora", artifacts=_adapter_sources(tmp_path), base="text:1", **META)
    names = [(a.name, a.role, a.format) for a in mv.artifacts]
    assert names == [
        ("adapter_config.json", "aux", "json"),
        ("adapter_model.safetensors", "adapter", "safetensors"),
        ("model.onnx", "onnx", "onnx"),
        ("vocab.txt", "tokenizer", "text"),
    ]
    for record in mv.artifacts:
        path = store.artifact_path(mv, record.name)
        assert path == store.root / "blobs" / record.sha256[:2] / f"{record.sha256}.{record.format}"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == record.sha256
        assert path.stat().st_size == record.size
    assert store.artifact_path(mv, "vocab.txt").read_bytes() == b"[PAD]\n[UNK]\n"
    config = json.loads(store.artifact_path(mv, "adapter_config.json").read_text())
    assert config == {"r": 2, "target_modules": ["q"]}
    assert (mv.weights, mv.weights_sha256, mv.base) == (None, None, "text:1")
    assert base.weights_sha256 == base.artifact("model.safetensors").sha256
    as_json = json.loads(json.dumps(mv.to_dict()))
    assert as_json["base"] == "text:1" and as_json["weights_sha256"] is None
    assert as_json["artifacts"][0]["name"] == "adapter_config.json"
    assert store.resolve("text-lora") == mv


def test_artifacts_and_a_state_dict_combine_and_state_dict_is_the_weights(
    store: ModelStore,
) -> None:
    extra = ArtifactSource.json("config.json", "aux", {"hidden": 4})
    mv = store.register("m", {"w": torch.ones(2)}, artifacts=[extra], **META)
    assert [(a.name, a.role) for a in mv.artifacts] == [
        ("config.json", "aux"),
        ("model.safetensors", "weights"),
    ]
    assert torch.equal(store.load_weights(mv)["w"], torch.ones(2))
    assert torch.equal(store.load_tensors(mv, "model.safetensors")["w"], torch.ones(2))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda p: ArtifactSource.json("a.json", "config", {}),
            "unknown artifact role 'config'; choose one of: weights, adapter, onnx, tokenizer, "
            "quantized, engine, aux",
        ),
        (lambda p: ArtifactSource.json("../a.json", "aux", {}), "bad artifact name '../a.json'"),
        (lambda p: ArtifactSource.json(".hidden", "aux", {}), "bad artifact name"),
        (lambda p: ArtifactSource.json("a.json", "aux", {1, 2}), "'a.json' is not JSON-serial"),
        (lambda p: ArtifactSource.bytes("a", "aux", "text", "text"), "data must be bytes, got str"),
        (lambda p: ArtifactSource.bytes("a", "aux", b"", "Text!"), "bad format 'Text!'"),
        (lambda p: ArtifactSource.file("a", "aux", p / "nope.bin"), "nope.bin' is not a file"),
        (
            lambda p: ArtifactSource("a", "aux", "bin", "bytes", b"", {"scale": float("nan")}),
            "artifact 'a': meta is not JSON-serialisable",
        ),
        (lambda p: ArtifactSource.file("w", "weights", p / "x.onnx"), "needs format 'safetensors'"),
        (
            lambda p: ArtifactSource.file("a", "aux", p / "x.weird"),
            r"cannot tell the format of 'x.weird' from its suffix .*; pass format=",
        ),
        (
            lambda p: ArtifactSource.tensors("m.safetensors", "weights", {"w": [object()]}),
            r"artifact 'm.safetensors': state_dict\['w'\]\[0\] has type object",
        ),
    ],
)
def test_bad_artifact_sources_are_refused(tmp_path: Path, make, message: str) -> None:
    (tmp_path / "x.onnx").write_bytes(b"o")
    (tmp_path / "x.weird").write_bytes(b"w")
    with pytest.raises(StoreError, match=message):
        make(tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "a version needs a state_dict, at least one artifact, or a base"),
        ({"artifacts": ["model.onnx"]}, "artifacts must be a sequence of ArtifactSource"),
        (
            {"artifacts": [ArtifactSource.json("a.json", "aux", {})] * 2},
            r"artifact names must be unique within a version; repeated: \['a.json'\]",
        ),
        (
            {
                "artifacts": [
                    ArtifactSource.tensors("a.safetensors", "weights", {"w": torch.ones(1)}),
                    ArtifactSource.tensors("b.safetensors", "weights", {"w": torch.ones(1)}),
                ]
            },
            "at most one 'weights' artifact",
        ),
        (
            {
                "state_dict": {"w": torch.ones(1)},
                "artifacts": [ArtifactSource.json("model.safetensors", "aux", {})],
            },
            r"repeated: \['model.safetensors'\]",
        ),
        ({"base": "nope:1"}, "base 'nope:1' does not exist: unknown model 'nope'"),
        ({"base": "other:1"}, "base other:1 belongs to solution 'fraud', not 'text'"),
        ({"base": 3}, "base must be a ref like 'name:3', an ExternalBase or None, got 3"),
    ],
)
def test_bad_registrations_write_nothing(store: ModelStore, kwargs: dict, message: str) -> None:
    store.register("other", {"w": torch.ones(1)}, solution="fraud", config={}, metrics={})
    before = _blobs(store)
    with pytest.raises(StoreError, match=message):
        store.register("m", **kwargs, **META)
    assert _blobs(store) == before
    assert store.names() == ["other"]


def test_reading_errors_name_the_version_the_artifact_and_the_file(
    store: ModelStore, tmp_path
) -> None:
    store.register("text", {"w": torch.zeros(3)}, **META)
    mv = store.register("lora", artifacts=_adapter_sources(tmp_path), base="text", **META)
    with pytest.raises(
        StoreError,
        match=r"lora:1 has no artifact 'model.bin'; its artifacts: adapter_config.json, ad",
    ):
        store.artifact_path(mv, "model.bin")
    with pytest.raises(StoreError, match=r"lora:1: artifact 'model.onnx' is onnx, not safetensors"):
        store.load_tensors(mv, "model.onnx")
    with pytest.raises(
        StoreError,
        match=r"lora:1 has no weights artifact; its artifacts: .*_model.safetensors \(adapter\)",
    ):
        store.load_weights(mv)
    onnx = store.artifact_path(mv, "model.onnx")
    onnx.chmod(0o644)
    onnx.write_bytes(b"tampered")
    with pytest.raises(
        StoreError,
        match=rf"lora:1: onnx file '{onnx}' \(artifact 'model.onnx'\) is corrupted \(sha256 ",
    ):
        store.artifact_path(mv, "model.onnx")
    onnx.unlink()
    with pytest.raises(
        StoreError, match=rf"lora:1: onnx file '{onnx}' \(artifact 'model.onnx'\) is missing"
    ):
        store.materialize(mv, tmp_path / "out")


def test_materialize_links_every_artifact_under_its_name(store: ModelStore, tmp_path) -> None:
    store.register("text", {"w": torch.zeros(3)}, **META)
    mv = store.register("lora", artifacts=_adapter_sources(tmp_path), base="text", **META)
    out = store.materialize("lora:1", tmp_path / "out")
    assert out == tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(a.name for a in mv.artifacts)
    for record in mv.artifacts:
        blob = store.artifact_path(mv, record.name)
        assert (out / record.name).read_bytes() == blob.read_bytes()
        assert os.path.samefile(out / record.name, blob)  # a hard link on one file system
        assert blob.stat().st_mode & 0o777 == 0o444  # read-only: the link cannot edit the blob
    (out / "vocab.txt").unlink()
    (out / "adapter_config.json").chmod(0o644)
    (out / "adapter_config.json").unlink()
    (out / "adapter_config.json").write_text("{}")  # a user's edit is replaced again
    store.materialize(mv, out)
    assert (out / "vocab.txt").read_bytes() == b"[PAD]\n[UNK]\n"
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 2


def test_materialize_copies_when_links_are_impossible(
    store: ModelStore, tmp_path, monkeypatch
) -> None:
    mv = store.register("m", {"w": torch.ones(2)}, **META)

    def no_links(src: object, dst: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    out = store.materialize(mv, tmp_path / "copy")
    blob = store.artifact_path(mv, "model.safetensors")
    assert (out / "model.safetensors").read_bytes() == blob.read_bytes()
    assert not os.path.samefile(out / "model.safetensors", blob)


def test_a_version_base_is_pinned_and_becomes_the_parent(store: ModelStore) -> None:
    store.register("text", {"w": torch.zeros(3)}, **META)
    store.register("text", {"w": torch.ones(3)}, **META)
    store.set_alias("text", "production", 1)
    child = store.register("lora", {"a": torch.ones(1)}, base="text:production", **META)
    store.set_alias("text", "production", 2)
    assert store.resolve("lora").base == "text:1"  # the alias moved; the base did not
    assert child.lineage["parent"] == "text:1"
    other = store.register(
        "lora", {"a": torch.ones(1)}, base="text:2", lineage={"parent": "lora:1"}, **META
    )
    assert (other.base, other.lineage["parent"]) == ("text:2", "lora:1")  # caller's parent wins
    only_base = store.register("alias-only", base="text:2", **META)
    assert (only_base.artifacts, only_base.base) == ((), "text:2")


def test_chain_lists_the_version_then_its_bases_down_to_an_external_base(
    store: ModelStore, tmp_path
) -> None:
    hf = tmp_path / "hf-model"
    (hf / "sub").mkdir(parents=True)
    (hf / "config.json").write_text("{}")
    (hf / "sub" / "weights.bin").write_bytes(b"w")
    external = ExternalBase.from_path(hf)
    assert external.uri == str(hf) and external.kind == "huggingface"
    root = store.register("enc", {"w": torch.zeros(1)}, base=external, **META)
    mid = store.register("enc-ft", {"w": torch.ones(1)}, base="enc", **META)
    top = store.register("enc-lora", {"a": torch.ones(1)}, base="enc-ft:1", **META)
    chain = store.chain("enc-lora")
    assert chain == [top, mid, root, external]
    assert root.base == external and "parent" not in root.lineage
    assert root.to_dict()["base"] == {
        "kind": "huggingface",
        "uri": str(hf),
        "fingerprint": external.fingerprint,
    }
    assert store.chain(root) == [root, external]


def test_chain_refuses_cycles_and_chains_too_deep(store: ModelStore, monkeypatch) -> None:
    store.register("a", {"w": torch.zeros(1)}, **META)
    for name, base in [("b", "a"), ("c", "b"), ("d", "c")]:
        store.register(name, {"w": torch.zeros(1)}, base=base, **META)
    monkeypatch.setattr(store_module, "MAX_CHAIN", 3)
    with pytest.raises(
        StoreError, match=r"chain of bases of d:1 has more than 3 links: d:1 -> c:1 -> b:1 -> a:1"
    ):
        store.chain("d")
    conn = sqlite3.connect(store.root / "store.db")  # a cycle cannot be registered; forge one
    with conn:
        for name, base in [("x", "y:1"), ("y", "x:1")]:
            conn.execute(
                "INSERT INTO versions (name, version, solution, created_at, weights_sha256, "
                "config, metrics, lineage, run_id, base) VALUES (?, 1, 'text', '', '', '{}', "
                "'{}', '{}', NULL, ?)",
                (name, base),
            )
    conn.close()
    with pytest.raises(StoreError, match=r"chain of bases of x:1 has a cycle: x:1 -> y:1 -> x:1"):
        store.chain("x")


def test_bad_external_bases_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"external base '.*missing' does not exist"):
        ExternalBase.from_path(tmp_path / "missing")
    with pytest.raises(StoreError, match="external base kind 'Hugging Face' must match"):
        ExternalBase(uri="bert-base", fingerprint="abc", kind="Hugging Face")
    with pytest.raises(StoreError, match="external base fingerprint must be a non-empty string"):
        ExternalBase(uri="bert-base", fingerprint="")


def test_artifacts_are_immutable_through_raw_sql(store: ModelStore) -> None:
    store.register("m", {"w": torch.ones(1)}, **META)
    conn = sqlite3.connect(store.root / "store.db")
    try:
        with pytest.raises(sqlite3.DatabaseError, match="model artifacts are immutable"):
            conn.execute("UPDATE artifacts SET sha256 = 'x'")
        with pytest.raises(sqlite3.DatabaseError, match="model artifacts are immutable"):
            conn.execute("DELETE FROM artifacts")
    finally:
        conn.close()


def test_tensors_are_streamed_to_a_pid_tagged_temp_file_never_serialised_in_memory(
    store: ModelStore, monkeypatch
) -> None:
    import safetensors.torch

    written: list[str] = []
    save_file = safetensors.torch.save_file

    def recording_save_file(tensors: dict, filename: object, metadata: dict) -> None:
        written.append(Path(filename).name)
        save_file(tensors, filename, metadata=metadata)

    def no_bytes(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("the whole file was built in memory")

    monkeypatch.setattr(safetensors.torch, "save", no_bytes)
    monkeypatch.setattr(safetensors.torch, "save_file", recording_save_file)
    mv = store.register("m", {"w": torch.ones(4)}, **META)
    assert len(written) == 1 and written[0].startswith(f".blob.pid{os.getpid()}.")
    assert written[0].endswith(".tmp")
    assert torch.equal(store.load_weights(mv)["w"], torch.ones(4))
    assert [p.name for p in _blobs(store)] == [f"{mv.weights_sha256}.safetensors"]


def test_large_files_are_copied_in_chunks_with_the_right_hash(store: ModelStore, tmp_path) -> None:
    big = tmp_path / "engine.plan"
    big.write_bytes(os.urandom(1 << 20) * 2 + b"tail")  # more than two 1 MiB chunks
    mv = store.register("m", artifacts=[ArtifactSource.file("model.plan", "engine", big)], **META)
    record = mv.artifact("model.plan")
    assert (record.format, record.size) == ("engine", big.stat().st_size)
    assert record.sha256 == hashlib.sha256(big.read_bytes()).hexdigest()


def test_a_file_changed_before_commit_is_refused(store: ModelStore, tmp_path, monkeypatch) -> None:
    source = tmp_path / "tokenizer.json"
    source.write_text('{"v": 1}')
    original = ModelStore._commit_version

    def gc_and_edit_then_commit(self: ModelStore, record: dict, written: list) -> int:
        assert self.gc().removed == 1  # the fresh, not yet referenced file goes
        source.write_text('{"v": 2}')
        return original(self, record, written)

    monkeypatch.setattr(ModelStore, "_commit_version", gc_and_edit_then_commit)
    artifact = ArtifactSource.file("tokenizer.json", "tokenizer", source)
    with pytest.raises(
        StoreError, match=r"artifact 'tokenizer\.json' changed while it was being registered"
    ):
        store.register("tok", artifacts=[artifact], **META)
    assert store.names() == []


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: the pid is free now
    return child.pid


def test_gc_dry_run_lists_and_gc_removes_orphans_and_dead_writers_files(store: ModelStore) -> None:
    mv = store.register("m", {"w": torch.ones(2)}, **META)
    blobs = store.root / "blobs"
    orphan = blobs / "cd" / ("cd" + "1" * 62 + ".onnx")
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(b"12345")
    dead_pid = _dead_pid()
    dead = blobs / f".blob.pid{dead_pid}.abc123.tmp"
    dead.write_bytes(b"123")
    live = blobs / f".blob.pid{os.getpid()}.abc123.tmp"
    live.write_bytes(b"in flight")
    old_unknown, new_unknown = blobs / "cd" / ".cd00.1.tmp", blobs / "cd" / ".cd00.2.tmp"
    old_unknown.write_bytes(b"1")
    new_unknown.write_bytes(b"2")
    hour_ago = time.time() - store_module.STALE_TEMP_S - 60
    os.utime(old_unknown, (hour_ago, hour_ago))
    os.utime(live, (hour_ago, hour_ago))  # alive: kept however old

    report = store.gc(dry_run=True)
    found = {item.path: (item.bytes, item.reason) for item in report.items}
    assert found == {
        dead: (
            3,
            f"temporary file of a writer no longer running (pid {dead_pid})",
        ),
        orphan: (5, "no version references it"),
        old_unknown: (1, "temporary file older than 3600 s"),
    }
    assert (report.dry_run, report.removed, report.count, report.total_bytes) == (True, 0, 3, 9)
    assert dead.exists() and orphan.exists() and old_unknown.exists()

    report = store.gc()
    assert (report.dry_run, report.removed, report.total_bytes) == (False, 3, 9)
    assert not dead.exists() and not orphan.exists() and not old_unknown.exists()
    assert live.exists() and new_unknown.exists()
    assert torch.equal(store.load_weights(mv)["w"], torch.ones(2))
    assert store.gc().count == 0
