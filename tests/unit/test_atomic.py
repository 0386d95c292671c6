"""Shared plumbing: atomic and pid-tagged writes, appends, hashing, fingerprints, time, home."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from abyssal.core.atomic import (
    append_atomic,
    atomic_path,
    link_or_copy_atomic,
    pid_alive,
    pid_temp_file,
    temp_writer_pid,
    write_stream_atomic,
    write_text_atomic,
)
from abyssal.core.clock import utc_now
from abyssal.core.digest import fingerprint_path, sha256_file
from abyssal.core.home import abyssal_home


def test_pid_temp_file_names_its_writer_and_cleans_up(tmp_path: Path) -> None:
    with pid_temp_file(tmp_path / "new", "model.safetensors") as tmp:
        assert tmp.exists() and tmp.parent == tmp_path / "new"
        assert tmp.name.startswith(f".model.safetensors.pid{os.getpid()}.")
        assert temp_writer_pid(tmp) == os.getpid()
    assert not tmp.exists()


@pytest.mark.parametrize(
    ("name", "pid"),
    [
        (".blob.pid42.k3j_9x.tmp", 42),
        (".a.b.c.pid7.zz.tmp", 7),
        (".ab00.1.tmp", None),  # abyssal 0.1.0 temp names carry no pid
        (".model.safetensors.12345678.tmp", None),
        ("blob.pid42.x.tmp", None),
        (".blob.pid42.x.txt", None),
    ],
)
def test_temp_writer_pid_parses_only_pid_tagged_names(name: str, pid: int | None) -> None:
    assert temp_writer_pid(name) == pid


def test_pid_alive_tells_running_from_finished_processes() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert pid_alive(os.getpid()) is True
    assert pid_alive(child.pid) is False
    assert pid_alive(0) is False and pid_alive(-1) is False


def test_atomic_path_keeps_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_write_stream_atomic_writes_the_chunks_in_order(tmp_path: Path) -> None:
    target = write_stream_atomic(tmp_path / "sub" / "big.bin", (bytes([i]) * 3 for i in range(4)))
    assert target.read_bytes() == b"\x00\x00\x00\x01\x01\x01\x02\x02\x02\x03\x03\x03"


def test_append_atomic_appends_whole_writes(tmp_path: Path) -> None:
    path = tmp_path / "log.txt"
    append_atomic(path, b"one\n")
    append_atomic(path, b"two\n")
    assert path.read_text() == "one\ntwo\n"


def test_link_or_copy_atomic_links_and_replaces(tmp_path: Path) -> None:
    src = tmp_path / "blob"
    src.write_bytes(b"content")
    dest = tmp_path / "out" / "model.bin"
    dest.parent.mkdir()
    dest.write_bytes(b"stale")
    assert link_or_copy_atomic(src, dest) == "link"
    assert os.path.samefile(src, dest) and dest.read_bytes() == b"content"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model.bin"]


def test_sha256_file_matches_hashlib_with_and_without_fsync(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(os.urandom(3 << 19))  # 1.5 MiB: more than one chunk
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert sha256_file(path) == sha256_file(path, fsync=True) == expected


def test_fingerprint_path_follows_names_and_contents_not_dot_files(tmp_path: Path) -> None:
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "sub" / "weights.bin").write_bytes(b"w")
    first = fingerprint_path(model)
    assert len(first) == 64 and fingerprint_path(model / "config.json") == sha256_file(
        model / "config.json"
    )
    (model / ".cache").mkdir()
    (model / ".cache" / "lock").write_text("x")
    (model / ".DS_Store").write_text("x")
    assert fingerprint_path(model) == first
    (model / "sub" / "weights.bin").rename(model / "sub" / "weights2.bin")
    renamed = fingerprint_path(model)
    assert renamed != first
    (model / "sub" / "weights2.bin").write_bytes(b"W")
    assert fingerprint_path(model) not in (first, renamed)
    with pytest.raises(FileNotFoundError, match="neither a file nor a folder"):
        fingerprint_path(tmp_path / "missing")


def test_utc_now_is_iso_utc_with_microseconds() -> None:
    stamp = utc_now()
    parsed = datetime.fromisoformat(stamp)
    assert parsed.utcoffset().total_seconds() == 0 and len(stamp.split(".")[1]) == 12
    assert len(utc_now("milliseconds").split(".")[1]) == 9


def test_abyssal_home_prefers_explicit_then_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ABYSSAL_HOME", str(tmp_path / "env"))
    assert abyssal_home() == tmp_path / "env"
    assert abyssal_home(tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.setenv("ABYSSAL_HOME", "")
    assert abyssal_home() == Path("~/.abyssal").expanduser()
