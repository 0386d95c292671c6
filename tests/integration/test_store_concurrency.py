"""The model store under real concurrency: several processes registering at once, and crashes.

Each child is a fresh ``python -c`` process, so nothing (connections, locks, imports) is shared with
the test process except the store folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import abyssal
from abyssal.core.store import ModelStore
from tests.unit.legacy_store_v1 import V1Store

WORKERS = 4
VERSIONS_PER_WORKER = 10
CHILD_TIMEOUT_S = 240

# Registers VERSIONS_PER_WORKER versions of "shared", each with weights that encode (worker, i).
REGISTER_MANY = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import torch
    from abyssal.core.store import ModelStore

    root, worker, count, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    Path(f"{go}.ready{worker}").touch()
    while not go.exists():  # start together, once every process has imported torch
        time.sleep(0.01)
    store = ModelStore(root)
    for i in range(count):
        weights = {"w": torch.full((8, 8), float(worker * 1000 + i)), "i": torch.tensor([i])}
        mv = store.register("shared", weights, solution="test", config={"worker": worker},
                            metrics={"worker": worker, "i": i})
        print(mv.version, flush=True)
    """
)

# Registers once, then crashes in the middle of a second registration. CRASH_AT=before_insert
# dies with the write transaction open and nothing inserted; after_insert dies after the INSERT
# but before COMMIT. The hook lives only in this child script.
REGISTER_THEN_CRASH = textwrap.dedent(
    """
    import os, sys
    import torch
    from abyssal.core.store import ModelStore

    store = ModelStore(sys.argv[1])
    store.register("m", {"w": torch.zeros(3)}, solution="test", config={}, metrics={})
    original = ModelStore._insert_version

    def crash(self, conn, record):
        if os.environ["CRASH_AT"] == "after_insert":
            original(self, conn, record)
        os._exit(1)

    ModelStore._insert_version = crash
    store.register("m", {"w": torch.ones(3)}, solution="test", config={}, metrics={})
    print("not reached", flush=True)
    """
)


# Opens the store (migrating it if needed) once every process is ready, and lists its versions.
OPEN_TOGETHER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from abyssal.core.store import ModelStore

    root, worker, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    Path(f"{go}.ready{worker}").touch()
    while not go.exists():
        time.sleep(0.001)
    print(" ".join(mv.ref for mv in ModelStore(root).list_versions()), flush=True)
    """
)


def _child_env(**extra: str) -> dict[str, str]:
    src = str(Path(abyssal.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def _spawn(script: str, *args: object, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        env=_child_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _start_together(go: Path, count: int) -> None:
    """Wait until ``count`` children said they are ready, then let them all go."""
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while len(list(go.parent.glob(f"{go.name}.ready*"))) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()


def test_processes_registering_at_once_get_distinct_consecutive_versions(tmp_path: Path) -> None:
    root, go = tmp_path / "store", tmp_path / "go"  # the store does not exist yet: schema races too
    children = [
        _spawn(REGISTER_MANY, root, worker, VERSIONS_PER_WORKER, go) for worker in range(WORKERS)
    ]
    _start_together(go, WORKERS)
    reported = []
    for child in children:
        out, err = child.communicate(timeout=CHILD_TIMEOUT_S)
        assert child.returncode == 0, err
        reported += [int(line) for line in out.split()]
    total = WORKERS * VERSIONS_PER_WORKER
    assert sorted(reported) == list(range(1, total + 1))
    store = ModelStore(root)
    versions = store.list_versions("shared")
    assert [mv.version for mv in versions] == list(range(1, total + 1))
    written = sorted((mv.metrics["worker"], mv.metrics["i"]) for mv in versions)
    assert written == [(w, i) for w in range(WORKERS) for i in range(VERSIONS_PER_WORKER)]
    for mv in versions:
        weights = store.load_weights(mv)
        expected = float(mv.metrics["worker"] * 1000 + mv.metrics["i"])
        assert torch.equal(weights["w"], torch.full((8, 8), expected))
        assert weights["i"].item() == mv.metrics["i"]


@pytest.mark.parametrize("crash_at", ["before_insert", "after_insert"])
def test_crash_mid_register_leaves_no_half_written_version(tmp_path: Path, crash_at: str) -> None:
    child = _spawn(REGISTER_THEN_CRASH, tmp_path, CRASH_AT=crash_at)
    out, err = child.communicate(timeout=CHILD_TIMEOUT_S)
    assert child.returncode == 1, err
    assert "not reached" not in out
    store = ModelStore(tmp_path)
    assert [mv.ref for mv in store.list_versions()] == ["m:1"]
    blobs = sorted((tmp_path / "blobs").rglob("*.safetensors"))
    assert len(blobs) == 2  # the crashed version's weights were written, but nothing points at them
    assert store.gc().removed == 1
    mv = store.register("m", {"w": torch.full((3,), 2.0)}, solution="test", config={}, metrics={})
    assert mv.ref == "m:2"
    assert torch.equal(store.load_weights("m:2")["w"], torch.full((3,), 2.0))
    assert torch.equal(store.load_weights("m:1")["w"], torch.zeros(3))


def test_processes_opening_an_old_store_at_once_migrate_it_once(tmp_path: Path) -> None:
    root, go = tmp_path / "old", tmp_path / "go"
    v1 = V1Store(root)
    for i in range(3):
        v1.register("m", {"w": torch.full((2,), float(i))}, f"2026-01-0{i + 1}T00:00:00+00:00")
    v1.close()
    children = [_spawn(OPEN_TOGETHER, root, worker, go) for worker in range(WORKERS)]
    _start_together(go, WORKERS)
    for child in children:
        out, err = child.communicate(timeout=CHILD_TIMEOUT_S)
        assert child.returncode == 0, err  # a second migration would fail: duplicate column
        assert out.split() == ["m:1", "m:2", "m:3"]
    store = ModelStore(root)
    assert [len(mv.artifacts) for mv in store.list_versions()] == [1, 1, 1]
    assert torch.equal(store.load_weights("m:3")["w"], torch.full((2,), 2.0))
