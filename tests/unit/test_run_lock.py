"""The run lock: held by the process executing a run, refused to a second one with the holder's
pid, released when that process dies; statuses read against it; the trainer takes it first."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from abyssal.contracts.train_config import TrainConfig
from abyssal.core.errors import ConfigError
from abyssal.core.runs import Run, RunLockedError, list_runs
from abyssal.train.trainer import Trainer

HOLDER = textwrap.dedent(
    """
    import sys, time
    from abyssal.core.runs import Run

    Run.open(sys.argv[1]).lock()
    print("locked", flush=True)
    time.sleep(60)
    """
)


@pytest.fixture
def holder(tmp_path):
    """A second process that locks a run and waits to be killed."""
    procs = []

    def start(run: Run) -> subprocess.Popen:
        script = tmp_path / "hold.py"
        script.write_text(HOLDER)
        proc = subprocess.Popen(
            [sys.executable, str(script), run.id], stdout=subprocess.PIPE, text=True
        )
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(timeout=10)


def test_a_new_run_is_locked_by_its_process_and_the_lock_file_names_it():
    run = Run.create("train", "toy", None)
    assert run.locked_by() == os.getpid()
    assert (run.path / "run.lock").read_text() == f"{os.getpid()}\n"
    assert run.status == "running"
    run.lock()  # this process already holds it: a no-op
    assert Run.open(run.id).locked_by() == os.getpid()


def test_running_without_a_holder_reads_interrupted_and_ending_statuses_release_the_lock():
    run = Run.create("train", "toy", None)
    run.unlock()  # as if the process had died: run.json still says running
    assert run.info["status"] == "running"
    assert run.status == "interrupted" and run.locked_by() is None
    assert [r.status for r in list_runs()] == ["interrupted"]
    run.lock()
    run.set_status("trained")
    assert run.locked_by() == os.getpid()  # registration still to come
    run.set_status("completed")
    assert run.locked_by() is None and Run.open(run.id).status == "completed"


def test_a_second_process_is_refused_with_the_holders_pid_until_it_dies(holder):
    run = Run.create("train", "toy", None)
    run.unlock()
    proc = holder(run)
    with pytest.raises(RunLockedError, match=f"being executed by process {proc.pid}") as info:
        Run.open(run.id).lock()
    assert info.value.pid == proc.pid
    assert Run.open(run.id).status == "running"
    assert Run.open(run.id).locked_by() == proc.pid
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert Run.open(run.id).status == "interrupted"  # the kernel released the dead holder's lock
    again = Run.open(run.id)
    again.lock()
    assert again.locked_by() == os.getpid()
    assert (run.path / "run.lock").read_text() == f"{os.getpid()}\n"


def test_a_second_trainer_changes_nothing_while_the_first_holds_the_run(holder):
    run = Run.create("train", "toy", None)
    run.unlock()
    proc = holder(run)
    before = (run.path / "run.json").read_text()
    model_built = []

    class Task:
        def build_model(self):
            model_built.append(True)
            return torch.nn.Linear(1, 1)

    trainer = Trainer(Task(), TrainConfig(progress=False), Run.open(run.id), metric="m")
    with pytest.raises(RunLockedError, match=str(proc.pid)):
        trainer.fit(resume=True)
    assert model_built == []
    assert (run.path / "run.json").read_text() == before  # not marked failed


def test_trainer_refuses_an_unknown_end_status():
    with pytest.raises(ConfigError, match="end_status must be 'completed' or 'trained'"):
        Trainer(
            object(), TrainConfig(), Run.create("train", "toy", None), metric="m", end_status="done"
        )  # type: ignore[arg-type]
