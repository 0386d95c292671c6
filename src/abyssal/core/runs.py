"""Run records: one folder per training, optimization, benchmark or pipeline execution.

A run lives in ``$ABYSSAL_HOME/runs/<run_id>/`` (``ABYSSAL_HOME`` defaults to ``~/.abyssal``)::

    run.json        id, kind, solution, status, timestamps, produced model versions, final metrics
    run.lock        locked (``flock``) by the process executing the run; holds that process's id
    config.yaml     the resolved config
    metrics.jsonl   one JSON object per logged row (per evaluation or step for training)
    log.txt         human-readable log lines, each prefixed with a UTC timestamp
    checkpoints/    whatever the producer needs to resume (see ``abyssal.train.checkpoint``)

One process executes a run at a time: it holds an exclusive ``flock`` on ``run.lock``, which the
operating system releases when the process ends, however it ends (a SIGKILL included). A second
process that tries to execute the run (:meth:`Run.lock`) is refused with :class:`RunLockedError`,
which names the holder's pid. Statuses:

    running      a process holds the lock and is executing the run
    trained      training finished; the model version is not registered yet
    completed    finished (for training: the model version is registered)
    failed       stopped by an error (``run.json`` says which)
    interrupted  stopped by Ctrl-C, or killed (``run.json`` says running, nobody holds the lock)
    damaged      ``run.json`` is missing or unreadable (listed, never written)

Records are written atomically (temporary file + ``os.replace``), so a killed process leaves either
the old or the new file, never half of one. ``log.txt`` and ``metrics.jsonl`` are the exceptions:
each line is appended with one ``O_APPEND`` write, which lands whole, without rewriting the file;
a torn last metrics line (a kill mid-write) is ignored when reading.

Example:
    >>> run = Run.create("train", "fraud", {"epochs": 3}, root=tmp)  # doctest: +SKIP
    >>> run.log_metrics({"epoch": 0, "train_loss": 0.7})  # doctest: +SKIP
    >>> Run.open("latest", root=tmp).metrics_history()  # doctest: +SKIP
    [{'epoch': 0, 'train_loss': 0.7}]
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import re
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from abyssal.core.atomic import FILE_MODE, append_atomic, write_text_atomic
from abyssal.core.clock import utc_now
from abyssal.core.config import save_config
from abyssal.core.errors import AbyssalError
from abyssal.core.home import abyssal_home, make_folder

__all__ = [
    "DAMAGED",
    "RUN_STATUSES",
    "Run",
    "RunLockedError",
    "abyssal_home",
    "list_runs",
    "new_run_id",
    "runs_dir",
]

RUN_STATUSES = ("running", "trained", "completed", "failed", "interrupted")
"""The statuses a run records in ``run.json``."""
ENDED = ("completed", "failed", "interrupted")
"""Statuses that end a run's execution: setting one releases the run's lock."""
DAMAGED = "damaged"
"""The status shown for a run folder whose ``run.json`` is missing or unreadable."""
LOCK_NAME = "run.lock"
REQUIRED_KEYS = ("id", "kind", "solution", "status")
_LOCK_TRIES = 10  # a reader checking the lock holds it shared for microseconds: try again
_HELD: dict[str, int] = {}  # lock file -> open descriptor, for the locks this process holds


class RunLockedError(AbyssalError):
    """Another process is executing the run.

    Args:
        message: what was refused, naming the run and the holder.
        pid: the holder's process id (0 if it had not written it yet).
    """

    def __init__(self, message: str, pid: int) -> None:
        super().__init__(message)
        self.pid = pid


def runs_dir(root: str | Path | None = None) -> Path:
    """The folder holding all runs: ``<abyssal home>/runs``."""
    return abyssal_home(root) / "runs"


def new_run_id(solution: str, now: datetime | None = None) -> str:
    """A fresh run id: UTC time, the solution name and 4 random hex digits.

    Args:
        solution: the solution name (lower-cased; other characters than ``a-z0-9`` become ``-``).
        now: the time to stamp; the current time by default.

    Returns:
        An id such as ``20261128-101502-fraud-3f9a``.

    Example:
        >>> new_run_id("Fraud", datetime(2026, 11, 28, 10, 15, 2))[:21]
        '20261128-101502-fraud'
    """
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    slug = re.sub(r"[^a-z0-9]+", "-", solution.lower()).strip("-") or "run"
    return f"{stamp}-{slug}-{secrets.token_hex(2)}"


class Run:
    """The record of one execution, backed by its folder.

    Use :meth:`create` or :meth:`open` rather than the constructor. One process writes a run at a
    time (the one executing it); any number may read it.

    Args:
        path: the run folder.
        info: the contents of ``run.json``.
    """

    def __init__(self, path: Path, info: dict[str, Any]) -> None:
        self.path = path
        self._info = info

    @classmethod
    def create(cls, kind: str, solution: str, config: Any, root: str | Path | None = None) -> Run:
        """Create a new run folder with ``run.json`` (status ``running``) and ``config.yaml``.

        The new run is locked by this process (see :meth:`lock`) until it ends.

        Args:
            kind: what is executed, e.g. ``"train"``, ``"optimize"``, ``"bench"``.
            solution: the solution name.
            config: the resolved config: a config dataclass, a mapping, or ``None`` for none.
            root: the abyssal home; ``$ABYSSAL_HOME`` or ``~/.abyssal`` by default.

        Returns:
            The new run.

        Example:
            >>> run = Run.create("train", "fraud", None, root=tmp)  # doctest: +SKIP
            >>> run.status  # doctest: +SKIP
            'running'
        """
        path = _make_run_folder(runs_dir(root), solution)
        (path / "checkpoints").mkdir()
        now = utc_now()
        info = {
            "id": path.name,
            "kind": kind,
            "solution": solution,
            "status": "running",
            "created": now,
            "updated": now,
            "outputs": [],
            "metrics": {},
            "error": None,
        }
        run = cls(path, info)
        run.lock()
        if config is not None:
            run.save_config(config)
        run._write_info()
        return run

    @classmethod
    def open(cls, run_id: str, root: str | Path | None = None) -> Run:
        """Open an existing run by id, or the most recently created one with ``"latest"``.

        Args:
            run_id: a run id, or ``"latest"``.
            root: the abyssal home; ``$ABYSSAL_HOME`` or ``~/.abyssal`` by default.

        Returns:
            The run.

        Raises:
            AbyssalError: no such run (the message lists the most recent ids), or a damaged
                ``run.json`` (the message says what is wrong with it).

        Example:
            >>> Run.open("latest", root=tmp).id  # doctest: +SKIP
            '20261128-101502-fraud-3f9a'
        """
        base = runs_dir(root)
        if run_id == "latest":
            runs = list_runs(root)
            if not runs:
                raise AbyssalError(f"no runs under {base} yet")
            run_id = runs[0].id
        path = base / run_id
        if not path.is_dir() or run_id.startswith("."):
            recent = [r.id for r in list_runs(root)[:10]]
            known = ", ".join(recent) if recent else "(none)"
            raise AbyssalError(f"no run '{run_id}' under {base}; recent runs: {known}")
        try:
            return cls(path, _read_info(path))
        except AbyssalError as exc:
            raise AbyssalError(f"run {run_id} is damaged: {exc}") from None

    @property
    def id(self) -> str:
        """The run id (the folder name)."""
        return self._info["id"]

    @property
    def kind(self) -> str:
        """What the run executes (``"train"``, ...)."""
        return self._info["kind"]

    @property
    def solution(self) -> str:
        """The solution the run belongs to."""
        return self._info["solution"]

    @property
    def status(self) -> str:
        """The status, checked against the lock: a run recorded as ``running`` whose lock nobody
        holds was killed, and is ``interrupted``.

        Example:
            >>> Run.open("20261128-101502-fraud-3f9a").status  # doctest: +SKIP
            'interrupted'
        """
        recorded = self._info["status"]
        if recorded == "running" and self.locked_by() is None:
            return "interrupted"
        return recorded

    def locked_by(self) -> int | None:
        """The id of the process executing the run, or ``None`` when nobody holds its lock.

        Returns:
            The holder's pid (this process's own when it holds the lock; 0 when the holder has
            not written its pid yet), or ``None``.

        Example:
            >>> Run.create("train", "fraud", None).locked_by() == os.getpid()  # doctest: +SKIP
            True
        """
        return _lock_holder(self.path / LOCK_NAME)

    def lock(self) -> None:
        """Lock the run for this process, which is about to execute it; a no-op if it already holds
        the lock. The operating system releases the lock when the process ends.

        Raises:
            RunLockedError: another process holds the lock; the message names its pid.
            AbyssalError: the lock file cannot be opened (e.g. a read-only run folder).

        Example:
            >>> Run.open("latest").lock()  # doctest: +SKIP
            Traceback (most recent call last):
            RunLockedError: run 20261128-101502-fraud-3f9a is being executed by process 4242 ...
        """
        holder = _take_lock(self.path / LOCK_NAME)
        if holder is not None:
            who = f"process {holder}" if holder else "another process"
            raise RunLockedError(
                f"run {self.id} is being executed by {who} (it holds {self.path / LOCK_NAME}); "
                f"wait for it to end, or stop it (kill {holder or 'PID'}), then try again",
                holder,
            )

    def unlock(self) -> None:
        """Release this process's lock on the run, if it holds it."""
        fd = _HELD.pop(str((self.path / LOCK_NAME).absolute()), None)
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock

    @property
    def info(self) -> dict[str, Any]:
        """A copy of ``run.json``."""
        return json.loads(json.dumps(self._info))

    @property
    def checkpoint_dir(self) -> Path:
        """The run's ``checkpoints/`` folder."""
        return self.path / "checkpoints"

    @property
    def config_path(self) -> Path:
        """The run's ``config.yaml``."""
        return self.path / "config.yaml"

    def save_config(self, config: Any) -> None:
        """Write (or replace) the resolved config: a config dataclass or a mapping."""
        if dataclasses.is_dataclass(config) and not isinstance(config, type):
            save_config(config, self.config_path)
        else:
            write_text_atomic(self.config_path, yaml.safe_dump(dict(config), sort_keys=False))

    def set_status(self, status: str, error: str | None = None) -> None:
        """Set the status, with an error message for ``failed`` / ``interrupted`` runs.

        ``completed``, ``failed`` and ``interrupted`` end the run's execution and release its lock.

        Args:
            status: one of ``running``, ``trained``, ``completed``, ``failed``, ``interrupted``.
            error: what went wrong; cleared when ``None``.

        Raises:
            AbyssalError: an unknown status.
        """
        if status not in RUN_STATUSES:
            raise AbyssalError(f"run status '{status}' is not one of: {', '.join(RUN_STATUSES)}")
        self._info["status"] = status
        self._info["error"] = error
        self._write_info()
        if status in ENDED:
            self.unlock()

    def set_metrics(self, metrics: dict[str, Any]) -> None:
        """Record the run's final metrics in ``run.json``."""
        self._info["metrics"] = dict(metrics)
        self._write_info()

    def add_output(self, ref: str) -> None:
        """Record a model version the run produced (e.g. ``"fraud@3"``); duplicates are ignored."""
        if ref not in self._info["outputs"]:
            self._info["outputs"].append(ref)
            self._write_info()

    def log_metrics(self, row: dict[str, Any]) -> None:
        """Append one row (a JSON object) to ``metrics.jsonl`` with one ``O_APPEND`` write.

        The file is never rewritten here, so logging a row per step costs the same at step
        100,000 as at step 1. A torn last line left by a killed process is dropped first.

        Args:
            row: JSON-serialisable values, e.g. ``{"epoch": 3, "step": 120, "train_loss": 0.4}``.
        """
        data = (json.dumps(row) + "\n").encode()
        if _ends_torn(self.metrics_path):
            self._rewrite_metrics(self.metrics_history())
        append_atomic(self.metrics_path, data)

    def metrics_history(self) -> list[dict[str, Any]]:
        """All rows of ``metrics.jsonl``, in order.

        A last line without a newline that is not valid JSON is a row a killed process was
        writing; it is left out.

        Raises:
            AbyssalError: any other line that is not a JSON object (the message names the line).
        """
        path = self.metrics_path
        if not path.exists():
            return []
        text = path.read_text()
        lines = text.splitlines()
        torn = bool(text) and not text.endswith("\n")
        rows = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            if torn and number == len(lines) and not _is_json_object(line):
                break
            rows.append(_parse_row(line, path, number))
        return rows

    def truncate_metrics(self, last_epoch: int) -> None:
        """Drop rows whose ``epoch`` is after ``last_epoch`` (used when resuming from a checkpoint).

        Args:
            last_epoch: the last epoch to keep; ``-1`` drops every row that has an epoch.
        """
        rows = [r for r in self.metrics_history() if r.get("epoch", -1) <= last_epoch]
        self._rewrite_metrics(rows)

    def truncate_metrics_after_step(self, step: int) -> None:
        """Drop rows whose ``step`` is after ``step`` (resuming from a mid-epoch checkpoint).

        Rows without a ``step`` are kept.

        Args:
            step: the last step to keep.

        Example:
            >>> run.truncate_metrics_after_step(120)  # doctest: +SKIP
        """
        rows = [r for r in self.metrics_history() if r.get("step", step) <= step]
        self._rewrite_metrics(rows)

    @property
    def metrics_path(self) -> Path:
        """The run's ``metrics.jsonl``."""
        return self.path / "metrics.jsonl"

    def _rewrite_metrics(self, rows: list[dict[str, Any]]) -> None:
        write_text_atomic(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))

    def log(self, line: str) -> None:
        """Append a line to ``log.txt``, prefixed with the UTC time."""
        append_atomic(self.path / "log.txt", f"{utc_now()} {line.rstrip()}\n".encode())

    def _write_info(self) -> None:
        self._info["updated"] = utc_now()
        write_text_atomic(self.path / "run.json", json.dumps(self._info, indent=2) + "\n")

    def __repr__(self) -> str:
        return f"Run({self.id!r}, status={self.status!r})"


def list_runs(root: str | Path | None = None) -> list[Run]:
    """All runs, most recently created first.

    Args:
        root: the abyssal home; ``$ABYSSAL_HOME`` or ``~/.abyssal`` by default.

    Returns:
        The runs. A folder whose ``run.json`` is missing or unreadable is listed too, with status
        ``damaged`` and what is wrong as its ``error``; :meth:`Run.open` refuses it.

    Example:
        >>> [(r.id, r.status) for r in list_runs(tmp)]  # doctest: +SKIP
        [('20261128-101502-fraud-3f9a', 'completed'), ('20261127-093011-fraud-77c1', 'damaged')]
    """
    base = runs_dir(root)
    if not base.is_dir():
        return []
    runs = []
    for path in base.iterdir():
        if path.name.startswith(".") or not path.is_dir():
            continue
        try:
            runs.append(Run(path, _read_info(path)))
        except AbyssalError as exc:
            runs.append(Run(path, _damaged_info(path, str(exc))))
    return sorted(runs, key=lambda r: (r._info.get("created", ""), r.id), reverse=True)


def _make_run_folder(base: Path, solution: str) -> Path:
    make_folder(base, "runs folder")
    for _ in range(100):
        path = base / new_run_id(solution)
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise AbyssalError(
                f"cannot create a run folder under {base}: {exc.strerror or exc}"
            ) from None
    raise AbyssalError(f"could not create a new run folder under {base}")


def _read_info(folder: Path) -> dict[str, Any]:
    """``run.json`` of a run folder, checked to hold the keys every run has."""
    path = folder / "run.json"
    data = _read_json(path)
    missing = [key for key in REQUIRED_KEYS if not isinstance(data.get(key), str)]
    if missing:
        raise AbyssalError(f"{path} lacks {', '.join(missing)} (or they are not text)")
    return data


def _damaged_info(folder: Path, problem: str) -> dict[str, Any]:
    """What a run folder with a missing or unreadable ``run.json`` is listed as."""
    try:
        created = datetime.fromtimestamp(folder.stat().st_mtime, UTC).isoformat()
    except OSError:
        created = ""
    return {
        "id": folder.name,
        "kind": "?",
        "solution": "?",
        "status": DAMAGED,
        "created": created,
        "outputs": [],
        "metrics": {},
        "error": problem,
    }


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise AbyssalError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AbyssalError(f"{path} is not valid JSON ({exc})") from None
    except OSError as exc:
        raise AbyssalError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not isinstance(data, dict):
        raise AbyssalError(f"{path}: expected a JSON object")
    return data


def _take_lock(path: Path) -> int | None:
    """Lock ``path`` for this process: ``None`` on success, else the holder's pid (0: unknown)."""
    key = str(path.absolute())
    if key in _HELD:
        return None
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    except OSError as exc:
        raise AbyssalError(f"cannot lock the run: cannot open {path}: {exc.strerror}") from None
    try:
        if not _flock_exclusive(fd):
            holder = _pid_in(fd)
            os.close(fd)
            return holder
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:
        os.close(fd)
        raise AbyssalError(f"cannot lock the run with {path}: {exc.strerror or exc}") from None
    _HELD[key] = fd
    return None


def _flock_exclusive(fd: int) -> bool:
    """Take an exclusive flock on ``fd`` without blocking; whether it was taken."""
    for attempt in range(_LOCK_TRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt < _LOCK_TRIES - 1:
                time.sleep(0.01)
    return False


def _lock_holder(path: Path) -> int | None:
    """The pid holding ``path`` locked (this process's own included), or ``None``."""
    if str(path.absolute()) in _HELD:
        return os.getpid()
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # no lock file: nobody ever locked the run
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # released when fd closes below
        return None
    except BlockingIOError:
        return _pid_in(fd)
    finally:
        os.close(fd)


def _pid_in(fd: int) -> int:
    """The pid written in a lock file, or 0 if its holder has not written it yet."""
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdecimal() else 0


def _parse_row(line: str, path: Path, number: int) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise AbyssalError(f"{path}, line {number}: not valid JSON ({exc})") from None
    if not isinstance(row, dict):
        raise AbyssalError(f"{path}, line {number}: expected a JSON object")
    return row


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False


def _ends_torn(path: Path) -> bool:
    """Whether ``path`` exists, is not empty, and does not end with a newline."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            if fh.tell() == 0:
                return False
            fh.seek(-1, 2)
            return fh.read(1) != b"\n"
    except FileNotFoundError:
        return False
