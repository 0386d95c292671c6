"""Run records: one folder per training, optimization, benchmark or pipeline execution.

A run lives in ``$ABYSSAL_HOME/runs/<run_id>/`` (``ABYSSAL_HOME`` defaults to ``~/.abyssal``)::

    run.json        id, kind, solution, status, timestamps, produced model versions, final metrics
    config.yaml     the resolved config
    metrics.jsonl   one JSON object per logged row (per evaluation or step for training)
    log.txt         human-readable log lines, each prefixed with a UTC timestamp
    checkpoints/    whatever the producer needs to resume (see ``abyssal.train.checkpoint``)

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
import json
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from abyssal.core.atomic import append_atomic, write_text_atomic
from abyssal.core.clock import utc_now
from abyssal.core.config import save_config
from abyssal.core.errors import AbyssalError
from abyssal.core.home import abyssal_home

__all__ = ["RUN_STATUSES", "Run", "abyssal_home", "list_runs", "new_run_id", "runs_dir"]

RUN_STATUSES = ("running", "completed", "failed", "interrupted")


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
                ``run.json``.

        Example:
            >>> Run.open("latest", root=tmp).id  # doctest: +SKIP
            '20261128-101502-fraud-3f9a'
        """
        base = runs_dir(root)
        if run_id == "latest":
            runs = list_runs(root)
            if not runs:
                raise AbyssalError(f"no runs under {base} yet")
            return runs[0]
        path = base / run_id
        if not (path / "run.json").is_file():
            recent = [r.id for r in list_runs(root)[:10]]
            known = ", ".join(recent) if recent else "(none)"
            raise AbyssalError(f"no run '{run_id}' under {base}; recent runs: {known}")
        return cls(path, _read_json(path / "run.json"))

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
        """``running``, ``completed``, ``failed`` or ``interrupted``."""
        return self._info["status"]

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

        Args:
            status: one of ``running``, ``completed``, ``failed``, ``interrupted``.
            error: what went wrong; cleared when ``None``.

        Raises:
            AbyssalError: an unknown status.
        """
        if status not in RUN_STATUSES:
            raise AbyssalError(f"run status '{status}' is not one of: {', '.join(RUN_STATUSES)}")
        self._info["status"] = status
        self._info["error"] = error
        self._write_info()

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
    """All readable runs, most recently created first.

    Args:
        root: the abyssal home; ``$ABYSSAL_HOME`` or ``~/.abyssal`` by default.

    Returns:
        The runs; folders without a readable ``run.json`` are skipped.

    Example:
        >>> [r.id for r in list_runs(tmp)]  # doctest: +SKIP
        ['20261128-101502-fraud-3f9a']
    """
    base = runs_dir(root)
    if not base.is_dir():
        return []
    runs = []
    for path in base.iterdir():
        try:
            runs.append(Run(path, _read_json(path / "run.json")))
        except (AbyssalError, OSError):
            continue
    return sorted(runs, key=lambda r: (r._info.get("created", ""), r.id), reverse=True)


def _make_run_folder(base: Path, solution: str) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        path = base / new_run_id(solution)
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise AbyssalError(f"could not create a new run folder under {base}")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise AbyssalError(f"{path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise AbyssalError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise AbyssalError(f"{path}: expected a JSON object")
    return data


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
