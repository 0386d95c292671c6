"""`abyssal train` killed with SIGKILL mid-run and resumed with --resume ends with the metrics and
weights of a run that was never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from abyssal.core.runs import list_runs
from abyssal.core.store import ModelStore
from abyssal.train.checkpoint import peek_checkpoint

ARGS = [
    "data.synthetic_users=500",
    "data.synthetic_rings=4",
    "data.synthetic_days=20",
    "train.epochs=40",
    "train.patience=0",
    "train.progress=false",
    "model.hidden=32",
]


def _cli(home: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "ABYSSAL_HOME": str(home)}  # default threads: resume is still exact
    return subprocess.Popen(
        [sys.executable, "-m", "abyssal", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_epoch(home: Path, epoch: int, proc: subprocess.Popen, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = list_runs(home)
        if runs:
            meta = peek_checkpoint(runs[0].checkpoint_dir, "last")
            if meta and meta["state"]["epoch"] >= epoch:
                return runs[0].id
        if proc.poll() is not None:
            pytest.fail(f"training ended before epoch {epoch}: {proc.stderr.read()}")
        time.sleep(0.02)
    pytest.fail("no checkpoint appeared")


@pytest.mark.slow  # about 25-40 s on 2 cores: run with -m slow
def test_killed_training_resumes_to_the_same_result(tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    done = _cli(straight, "train", "fraud", *ARGS)
    assert done.wait(timeout=300) == 0, done.stderr.read()

    killed = tmp_path / "killed"
    proc = _cli(killed, "train", "fraud", *ARGS)
    run_id = _wait_for_epoch(killed, 5, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert ModelStore(killed).names() == []  # nothing registered by the killed process
    resumed = _cli(killed, "train", "fraud", "--resume", run_id)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()

    a, b = ModelStore(straight).resolve("fraud:1"), ModelStore(killed).resolve("fraud:1")
    assert b.run_id == run_id
    assert a.weights_sha256 == b.weights_sha256
    assert a.metrics == b.metrics
