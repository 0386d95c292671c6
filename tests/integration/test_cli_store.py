"""Store verbs through the CLI: garbage collection with a dry run, and showing a version's
artifacts."""

from __future__ import annotations

import json
import os

import pytest
import torch

from abyssal.cli.main import main
from abyssal.core.store import ModelStore


def test_models_gc_dry_run_lists_and_keeps_then_gc_deletes(capsys) -> None:
    store = ModelStore()
    mv = store.register("m", {"w": torch.ones(3)}, solution="test", config={}, metrics={})
    kept = store.artifact_path(mv.ref, "model.safetensors")
    orphan = kept.parent.parent / "ab" / f"ab{'0' * 62}.safetensors"
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"x" * 100)
    dead = kept.parent / f".blob.pid{2**22 + 7}.abc.tmp"  # a pid no process has
    dead.write_bytes(b"y" * 10)
    assert main(["models", "gc", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert orphan.name in out and dead.name in out and "would delete 2 files, 110 bytes" in out
    assert orphan.exists() and dead.exists()
    assert main(["models", "gc"]) == 0
    assert "deleted 2 files, 110 bytes" in capsys.readouterr().out
    assert not orphan.exists() and not dead.exists() and kept.exists()
    assert torch.equal(store.load_weights("m:1")["w"], torch.ones(3))


def test_models_show_lists_artifacts_and_base(capsys) -> None:
    store = ModelStore()
    store.register("m", {"w": torch.ones(3)}, solution="test", config={}, metrics={})
    store.register("m", {"w": torch.zeros(3)}, base="m:1", solution="test", config={}, metrics={})
    assert main(["models", "show", "m:2"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["base"] == "m:1" and shown["lineage"]["parent"] == "m:1"
    (artifact,) = shown["artifacts"]
    assert artifact["name"] == "model.safetensors" and artifact["role"] == "weights"
    assert artifact["size"] == os.path.getsize(store.artifact_path("m:2", "model.safetensors"))


def test_predict_refuses_a_negative_top(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "tabular", "--input", "rows.csv", "--top", "-1"])
    assert exit_info.value.code == 2
    assert "--top: must be >= 0, got -1" in capsys.readouterr().err
