"""Exporting model versions into a new store: chains of bases, aliases, bytes, lineage, and
refusing a destination that is not empty without leaving anything half-written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from abyssal.core.artifacts import ArtifactSource, ExternalBase
from abyssal.core.errors import StoreError
from abyssal.core.store import ModelStore, ModelVersion
from abyssal.core.store_export import export_versions

META = {"solution": "tabular", "config": {"lr": 0.1}, "metrics": {"auc": 0.5}}


def _weights(seed: int) -> dict[str, object]:
    gen = torch.Generator().manual_seed(seed)
    # a scalar entry makes the artifact carry flattening meta, which must survive the export
    return {"w": torch.randn(3, 2, generator=gen), "b": torch.zeros(2), "steps": 7}


def _adapter() -> list[ArtifactSource]:
    return [
        ArtifactSource.tensors("adapter_model.safetensors", "adapter", {"a": torch.ones(2, 2)}),
        ArtifactSource.json("adapter_config.json", "aux", {"r": 2}),
    ]


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    """m:1 (left behind), m:2 (parent m:1), m:3 (adapter over m:2, production), ext:1."""
    store = ModelStore(tmp_path / "src")
    store.register("m", _weights(0), **META)
    store.register("m", _weights(1), **META, lineage={"parent": "m:1", "data_fingerprint": "d2"})
    store.register("m", artifacts=_adapter(), base="m:2", **META, run_id="run-3")
    store.set_alias("m", "production", 3)
    store.set_alias("m", "candidate", 1)
    base = ExternalBase(uri="/models/bert-base", fingerprint="f00d", kind="huggingface")
    store.register("ext", artifacts=[ArtifactSource.json("cfg.json", "aux", {})], base=base, **META)
    return store


def _shas(mv: ModelVersion) -> dict[str, str]:
    return {a.name: a.sha256 for a in mv.artifacts}


def test_export_copies_the_chain_and_maps_every_ref(store: ModelStore, tmp_path: Path) -> None:
    refs = ["m:production", "m:3", "m", "ext:1"]
    mapping = export_versions(store, refs, tmp_path / "out")
    assert mapping == {"m:production": "m:production", "m:3": "m:2", "m": "m:2", "ext:1": "ext:1"}
    new = ModelStore(tmp_path / "out")
    assert [mv.ref for mv in new.list_versions()] == ["ext:1", "m:1", "m:2"]
    for ref, there in mapping.items():
        old_mv, new_mv = store.resolve(ref), new.resolve(there)
        assert _shas(new_mv) == _shas(old_mv)
        assert (new_mv.solution, new_mv.config, new_mv.metrics) == (
            old_mv.solution,
            old_mv.config,
            old_mv.metrics,
        )
        for record in old_mv.artifacts:
            old_bytes = store.artifact_path(old_mv, record.name).read_bytes()
            assert new.artifact_path(new_mv, record.name).read_bytes() == old_bytes
    assert new.aliases("m") == {"production": 2}  # only the aliases the refs name
    chain = new.chain("m:production")
    assert [link.ref for link in chain] == ["m:2", "m:1"]
    assert chain[0].base == "m:1" and chain[0].run_id == "run-3"
    assert chain[0].lineage["parent"] == "m:1"  # the base, remapped
    assert _shas(chain[1]) == _shas(store.resolve("m:2"))
    loaded, original = new.load_weights("m:1"), store.load_weights("m:2")
    assert loaded["steps"] == original["steps"] == 7
    assert torch.equal(loaded["w"], original["w"])
    assert new.resolve("ext:1").base == store.resolve("ext:1").base  # external base as it was


def test_a_parent_left_behind_is_dropped_and_other_lineage_kept(
    store: ModelStore, tmp_path: Path
) -> None:
    export_versions(store, ["m:2"], tmp_path / "out")
    mv = ModelStore(tmp_path / "out").resolve("m:1")
    assert mv.lineage["parent"] is None
    assert mv.lineage["data_fingerprint"] == "d2"
    assert mv.lineage["package_version"] == store.resolve("m:2").lineage["package_version"]


def test_the_new_store_is_only_a_database_and_its_blobs(store: ModelStore, tmp_path: Path) -> None:
    export_versions(store, ["m:production"], tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["blobs", "store.db"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]


def test_an_empty_existing_folder_is_fine(store: ModelStore, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    assert export_versions(store, ["m:1"], tmp_path / "out") == {"m:1": "m:1"}
    assert ModelStore(tmp_path / "out").resolve("m").weights_sha256 == (
        store.resolve("m:1").weights_sha256
    )


def test_a_non_empty_destination_is_refused_and_left_alone(
    store: ModelStore, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match=r"'.*out': the folder is not empty"):
        export_versions(store, ["m:production"], out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="it is a file"):
        export_versions(store, ["m:1"], tmp_path / "file")


def test_a_failure_midway_leaves_nothing_behind(
    store: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = ModelStore.register
    calls = []

    def failing(self: ModelStore, *args: object, **kwargs: object) -> ModelVersion:
        calls.append(args)
        if len(calls) == 2:
            raise StoreError("disk full")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ModelStore, "register", failing)
    with pytest.raises(StoreError, match="disk full"):
        export_versions(store, ["m:production"], tmp_path / "out")
    assert len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_unknown_refs_and_no_refs_are_refused(store: ModelStore, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no version or alias 'staging'"):
        export_versions(store, ["m:staging"], tmp_path / "out")
    with pytest.raises(StoreError, match="nothing to export"):
        export_versions(store, [], tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
