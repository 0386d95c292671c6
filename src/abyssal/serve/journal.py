"""The journal of a stateful served model (the fraud solution's live graph): every request it has
applied, appended and fsynced before the answer goes out, replayed on restart.

A journal is a JSON-lines file, one applied request a line:
``{"seq": N, "crc": CRC32, "request": {...}}`` (the request as the client sent it; ``crc`` of its
canonical JSON). Appends are group commits: a batch's lines are written and fsynced once, then
the batch is answered. Opening a journal checks every line: a torn tail (bytes after the last
newline: a write a crash cut short, never acknowledged) is cut off with a warning; a damaged
complete line is an error naming it (the file needs a person, not a guess).

Restart: :func:`replay` feeds the logged requests, in order, through a fresh predictor of the
same model (``parse`` then ``predict``), which rebuilds its state: every acknowledged request is
back, and the next answer is the one an uninterrupted service would have given (the service
applies a stateful model's requests one at a time, in the journal's order).

Example:
    >>> journal = Journal(tmp / "fraud" / "journal.jsonl")  # doctest: +SKIP
    >>> journal.append([{"transaction_id": "T1", ...}])  # doctest: +SKIP
    >>> replay(FraudPredictor(loaded), journal)  # doctest: +SKIP
    1
"""

from __future__ import annotations

import json
import logging
import os
import threading
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from abyssal.core.errors import DataError

log = logging.getLogger(__name__)


def _canonical(request: Mapping[str, Any]) -> str:
    return json.dumps(request, sort_keys=True, separators=(",", ":"), allow_nan=False)


class Journal:
    """An append-only, fsynced log of applied requests.

    Args:
        path: the file (created with its folder if missing).

    Raises:
        DataError: a damaged line before the last (the file and line named).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        self.count = self._recover()
        self._file = open(self.path, "ab")  # noqa: SIM115 - kept open for appends
        self._lock = threading.Lock()
        if created:  # the new name itself must survive a crash
            _fsync_folder(self.path.parent)

    def _recover(self) -> int:
        """Check every line; cut a torn tail; how many requests are logged."""
        if not self.path.exists():
            return 0
        data = self.path.read_bytes()
        *complete, tail = data.split(b"\n")  # tail: what follows the last newline
        for number, line in enumerate(complete, start=1):
            if not self._valid(line, number):
                raise DataError(
                    "a damaged line inside the journal (it was acknowledged); restore the file "
                    "from a backup or move it aside",
                    path=self.path,
                    row=number,
                )
        if tail:  # a write a crash cut short: never acknowledged
            log.warning("journal %s: an incomplete last line (a crash while writing) is cut off",
                        self.path)  # fmt: skip
            with open(self.path, "r+b") as f:
                f.truncate(len(data) - len(tail))
                f.flush()
                os.fsync(f.fileno())
        return len(complete)

    @staticmethod
    def _valid(line: bytes, seq: int) -> bool:
        try:
            entry = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return False
        if not isinstance(entry, dict) or entry.get("seq") != seq:
            return False
        request = entry.get("request")
        if not isinstance(request, dict):
            return False
        return entry.get("crc") == zlib.crc32(_canonical(request).encode())

    def entries(self) -> Iterator[dict[str, Any]]:
        """The logged requests, in the order they were applied."""
        with open(self.path, "rb") as f:
            for _, line in zip(range(self.count), f, strict=False):
                yield json.loads(line)["request"]

    def append(self, requests: Sequence[Mapping[str, Any]]) -> None:
        """Log ``requests`` and make them durable (one fsync for all) before returning."""
        if not requests:
            return
        with self._lock:
            lines = []
            for request in requests:
                self.count += 1
                text = _canonical(request)
                entry = {"seq": self.count, "crc": zlib.crc32(text.encode())}
                lines.append(json.dumps(entry)[:-1] + f', "request": {text}}}\n')
            self._file.write("".join(lines).encode())
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def replay(predictor: Any, journal: Journal) -> int:
    """Apply every logged request to ``predictor`` in order, one at a time as the service did
    (``parse``, then ``predict``); how many. A request that no longer parses is an error naming
    its line."""
    done = 0
    for number, request in enumerate(journal.entries(), start=1):
        try:
            parsed = predictor.parse(request)
        except DataError as e:
            raise DataError(
                f"replaying the journal: {e.reason}", path=journal.path, row=number
            ) from None
        predictor.predict([parsed])
        done += 1
    return done


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # folders cannot be opened everywhere (Windows)
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
