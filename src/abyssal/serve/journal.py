"""The journal of a stateful served model (the fraud solution's live graph): every request it has
applied, appended and fsynced before the answer goes out, replayed on restart.

A journal is a JSON-lines file, one applied request a line:
``{"seq": N, "crc": CRC32, "request": {...}}`` (the request as the client sent it; ``crc`` of its
canonical JSON). Appends are group commits: a batch's lines are written and fsynced once, then
the batch is answered. Opening a journal checks every line: a torn tail (bytes after the last
newline: a write a crash cut short, never acknowledged) is cut off with a warning; a damaged
complete line is an error naming it (the file needs a person, not a guess).

Snapshots: every ``snapshot_every`` applied requests the predictor's whole state
(``state_dict()``) is written next to the journal (``snapshot.pt``: the state, the journal
position it covers and the model version), atomically (a temporary file, fsynced, renamed).
The journal itself is never cut: it stays the full record of what was applied.

Restart: :meth:`Journal.restore` loads the snapshot (when it is of the same model version) and
feeds the requests logged after it, in order, through the predictor (``parse`` then
``predict``); without a usable snapshot, :func:`replay` feeds all of them. Either way every
acknowledged request is back, and the next answer is the one an uninterrupted service would
have given (the service applies a stateful model's requests one at a time, in the journal's
order).

Snapshots are Python pickles (``torch.save``): the state folder must be as trusted as the
model store.

Example:
    >>> journal = Journal(tmp / "fraud" / "journal.jsonl")  # doctest: +SKIP
    >>> journal.append([{"transaction_id": "T1", ...}])  # doctest: +SKIP
    >>> journal.restore(FraudPredictor(loaded), "fraud:3")  # doctest: +SKIP
    (0, 1)
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
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
        snapshot_every: write a snapshot of the predictor's state after this many applied
            requests (0: never; restarts then replay the whole journal).

    Raises:
        DataError: a damaged line before the last (the file and line named).
    """

    def __init__(self, path: str | Path, snapshot_every: int = 1000) -> None:
        if snapshot_every < 0:
            raise ValueError(f"snapshot_every must be >= 0, got {snapshot_every}")
        self.path = Path(path)
        self.snapshot_path = self.path.with_name("snapshot.pt")
        self.snapshot_every = snapshot_every
        self.snapshot_seq = 0  # the journal position the latest snapshot covers
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

    def entries(self, start: int = 0) -> Iterator[dict[str, Any]]:
        """The logged requests after the first ``start``, in the order they were applied."""
        with open(self.path, "rb") as f:
            for number, line in zip(range(1, self.count + 1), f, strict=False):
                if number > start:
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

    def snapshot_due(self) -> bool:
        """Whether ``snapshot_every`` requests were applied since the latest snapshot."""
        return self.snapshot_every > 0 and self.count - self.snapshot_seq >= self.snapshot_every

    def write_snapshot(self, predictor: Any, ref: str) -> None:
        """Write the predictor's state as of the journal's last line, atomically; the previous
        snapshot stays until the new one is whole on disk."""
        import torch

        with self._lock:
            seq = self.count
        payload = {"seq": seq, "model": ref, "state": predictor.state_dict()}
        folder = self.snapshot_path.parent
        fd, tmp = tempfile.mkstemp(prefix=".snapshot-", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(payload, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.snapshot_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_folder(folder)
        self.snapshot_seq = seq

    def restore(self, predictor: Any, ref: str) -> tuple[int, int]:
        """Bring a fresh predictor of model version ``ref`` to the journal's end: from the
        snapshot when there is one of ``ref`` (unreadable, of another version or ahead of the
        journal: ignored, with a warning), then the requests logged after it.

        Returns:
            ``(requests the snapshot covered, requests replayed)``.
        """
        start = 0
        if self.snapshot_path.exists() and hasattr(predictor, "load_state_dict"):
            start = self._load_snapshot(predictor, ref)
        self.snapshot_seq = start
        return start, replay(predictor, self, start=start)

    def _load_snapshot(self, predictor: Any, ref: str) -> int:
        import torch

        try:
            payload = torch.load(self.snapshot_path, map_location="cpu", weights_only=False)
            seq, model = int(payload["seq"]), payload["model"]
        except Exception as e:
            log.warning("snapshot %s cannot be read (%s); replaying the whole journal",
                        self.snapshot_path, e)  # fmt: skip
            return 0
        if model != ref or not 0 <= seq <= self.count:
            log.warning(
                "snapshot %s is of %s at request %d, the journal of %s has %d; replaying the "
                "whole journal", self.snapshot_path, model, seq, ref, self.count,
            )  # fmt: skip
            return 0
        predictor.load_state_dict(payload["state"])
        return seq


def replay(predictor: Any, journal: Journal, start: int = 0) -> int:
    """Apply the logged requests after the first ``start`` to ``predictor`` in order, one at a
    time as the service did (``parse``, then ``predict``); how many. A request that no longer
    parses is an error naming its line."""
    done = 0
    for number, request in enumerate(journal.entries(start), start=start + 1):
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
