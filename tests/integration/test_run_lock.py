"""Runs under real process faults, through the CLI: a second resume of a run being trained is
refused naming the trainer's pid; a SIGKILLed run lists as interrupted and resumes to exactly one
version with one metrics row per evaluation; a run killed between training and registration
lists as trained (never completed without a model) and resumes by registering, not retraining."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from abyssal.cli.main import main
from abyssal.core.errors import StoreError
from abyssal.core.runs import Run, list_runs
from abyssal.core.store import ModelStore
from abyssal.train.checkpoint import peek_checkpoint

EPOCHS = 80
SLOW = [  # about 0.15 s an epoch here: long enough to start a second process meanwhile
    "data.source=breast_cancer",
    "data.batch_size=2",
    f"train.epochs={EPOCHS}",
    "train.patience=0",
    "train.progress=false",
    "model.hidden=16",
    "baselines=false",
]
TINY = ["data.source=breast_cancer", "train.epochs=3", "train.progress=false", "baselines=false"]

KILLED_BEFORE_REGISTERING = textwrap.dedent(
    """
    import os, signal, sys
    from abyssal.core.store import ModelStore

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    ModelStore.register = die
    from abyssal.cli.main import main
    sys.exit(main(sys.argv[1:]))
    """
)


def _cli(home: Path, *args: str, script: Path | None = None) -> subprocess.Popen:
    command = [str(script)] if script else ["-m", "abyssal"]
    return subprocess.Popen(
        [sys.executable, *command, *args],
        env={**os.environ, "ABYSSAL_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_checkpoint(home: Path, proc: subprocess.Popen, epoch: int) -> str:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        runs = list_runs(home)
        meta = peek_checkpoint(runs[0].checkpoint_dir, "last") if runs else None
        if meta is not None and meta["state"]["epoch"] >= epoch:
            return runs[0].id
        assert proc.poll() is None, f"training ended early:\n{proc.communicate()[1]}"
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"no checkpoint for epoch {epoch} within 120 s")


def _runs_table(capsys) -> dict[str, str]:
    assert main(["runs"]) == 0
    lines = capsys.readouterr().out.splitlines()[2:]
    return {line.split()[0]: line.split()[2] for line in lines}


@pytest.mark.slow  # about 25-40 s on 2 cores: run with -m slow
def test_second_resume_refused_then_killed_run_resumes_to_one_version(abyssal_home, capsys):
    first = _cli(abyssal_home, "train", "tabular", *SLOW)
    try:
        run_id = _wait_for_checkpoint(abyssal_home, first, 1)
        second = _cli(abyssal_home, "train", "tabular", "--resume", run_id)
        _, err = second.communicate(timeout=120)
        assert second.returncode == 1
        assert first.poll() is None, "the first trainer ended before the refusal could be seen"
        assert f"run {run_id} is being executed by process {first.pid}" in err
        assert _runs_table(capsys)[run_id] == "running"
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
    assert first.returncode == -signal.SIGKILL
    assert _runs_table(capsys)[run_id] == "interrupted"
    assert ModelStore().names() == []

    assert main(["train", "tabular", "--resume", run_id]) == 0
    run = Run.open(run_id)
    assert [mv.ref for mv in ModelStore().list_versions()] == ["tabular:1"]
    assert [mv.ref for mv in ModelStore().versions_of_run(run_id)] == ["tabular:1"]
    assert [row["epoch"] for row in run.metrics_history()] == list(range(EPOCHS))
    assert (run.status, run.info["outputs"]) == ("completed", ["tabular:1"])
    assert _runs_table(capsys)[run_id] == "completed"


def test_killed_before_registering_lists_trained_and_resume_registers_without_training(
    abyssal_home, tmp_path, capsys
):
    script = tmp_path / "killed.py"
    script.write_text(KILLED_BEFORE_REGISTERING)
    proc = _cli(abyssal_home, "train", "tabular", *TINY, "--alias", "candidate", script=script)
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    (run,) = list_runs()
    assert _runs_table(capsys)[run.id] == "trained"  # trained, not registered: not completed
    assert ModelStore().names() == [] and run.info["outputs"] == []
    rows = run.metrics_history()
    assert len(rows) == 3

    assert main(["train", "tabular", "--resume", run.id, "--alias", "candidate"]) == 0
    assert f"run {run.id}: registered tabular:1" in capsys.readouterr().out
    assert Run.open(run.id).metrics_history() == rows  # no epoch trained again
    assert "resumed after epoch 2" in (run.path / "log.txt").read_text()
    assert ModelStore().resolve("tabular:candidate").ref == "tabular:1"
    assert _runs_table(capsys)[run.id] == "completed"
    assert main(["train", "tabular", "--resume", run.id]) == 0  # done: the same version
    assert [mv.ref for mv in ModelStore().list_versions()] == ["tabular:1"]


def test_a_failed_registration_marks_the_run_failed_and_resume_registers(
    abyssal_home, monkeypatch, capsys
):
    def refuse(*args, **kwargs):
        raise StoreError("disk full")

    register = ModelStore.register
    monkeypatch.setattr(ModelStore, "register", refuse)
    assert main(["train", "tabular", *TINY]) == 1
    (run,) = list_runs()
    info = json.loads((run.path / "run.json").read_text())
    assert info["status"] == "failed"
    assert "registering the model failed (StoreError: disk full)" in info["error"]
    assert run.locked_by() is None
    monkeypatch.setattr(ModelStore, "register", register)
    assert main(["train", "tabular", "--resume", run.id]) == 0
    assert [mv.run_id for mv in ModelStore().list_versions()] == [run.id]
    assert Run.open(run.id).status == "completed"
