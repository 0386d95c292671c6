"""The journal of a stateful model: appends are durable lines read back in order, a torn tail is
cut off, a damaged line is refused by number, and replaying rebuilds a predictor's state; a
fraud model served with a journal comes back from a restart with every acknowledged transaction
and the scores an uninterrupted service gives."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from abyssal.core.errors import DataError
from abyssal.serve.journal import Journal, replay


class Counter:
    """A stateful stand-in: the running total of the numbers it was given."""

    stateful = True

    def __init__(self) -> None:
        self.total = 0.0

    def parse(self, payload: Mapping[str, Any]) -> float:
        if not isinstance(payload.get("x"), int | float):
            raise DataError("'x' must be a number", column="x")
        return float(payload["x"])

    def predict(self, items: Sequence[float]) -> list[dict[str, float]]:
        out = []
        for x in items:
            self.total += x
            out.append({"total": self.total})
        return out

    def state_dict(self) -> dict[str, float]:
        return {"total": self.total}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        self.total = state["total"]


def test_appended_requests_are_read_back_in_order_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state" / "m" / "journal.jsonl"
    journal = Journal(path)
    journal.append([{"x": 1}, {"x": 2.5, "note": "é"}])
    journal.append([])
    journal.append([{"x": 3}])
    journal.close()
    again = Journal(path)
    assert again.count == 3 and list(again.entries()) == [
        {"x": 1},
        {"x": 2.5, "note": "é"},
        {"x": 3},
    ]
    again.append([{"x": 4}])
    assert [e["x"] for e in Journal(path).entries()] == [1, 2.5, 3, 4]


def test_a_torn_tail_is_cut_and_a_damaged_line_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.append([{"x": 1}, {"x": 2}])
    journal.close()
    good = path.read_bytes()
    path.write_bytes(good + b'{"seq": 3, "crc": 1, "requ')  # a crash in the middle of a write
    recovered = Journal(path)
    assert recovered.count == 2 and path.read_bytes() == good
    recovered.close()
    lines = good.split(b"\n")
    path.write_bytes(lines[0].replace(b'"x":1', b'"x":7') + b"\n" + lines[1] + b"\n")
    with pytest.raises(DataError, match=r"journal\.jsonl, row 1: a damaged line"):
        Journal(path)


def test_replay_rebuilds_the_state_and_names_a_request_that_no_longer_parses(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    journal.append([{"x": 1}, {"x": 2}, {"x": 3}])
    fresh = Counter()
    assert replay(fresh, journal) == 3 and fresh.total == 6
    journal.append([{"x": "three"}])
    with pytest.raises(DataError, match=r"j\.jsonl, row 4: replaying the journal: 'x' must be"):
        replay(Counter(), journal)


def test_a_restore_starts_from_the_snapshot_and_replays_only_what_follows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = Journal(tmp_path / "j.jsonl", snapshot_every=2)
    served = Counter()
    for x in (1, 2, 3):
        journal.append([{"x": x}])
        served.predict([float(x)])
        if journal.snapshot_due():
            journal.write_snapshot(served, "count:1")
    assert journal.snapshot_seq == 2 and not journal.snapshot_due()
    journal.append([{"x": 10}])
    assert Journal(tmp_path / "j.jsonl").restore(fresh := Counter(), "count:1") == (2, 2)
    assert fresh.total == 16  # 1 + 2 from the snapshot (it held 3), then 3 and 10 replayed
    # a snapshot of another version is not used: the whole journal is replayed
    assert Journal(tmp_path / "j.jsonl").restore(other := Counter(), "count:2") == (0, 4)
    assert other.total == 16 and "replaying the whole journal" in caplog.text
    (tmp_path / "snapshot.pt").write_bytes(b"not a pickle")
    assert Journal(tmp_path / "j.jsonl").restore(Counter(), "count:1") == (0, 4)
    assert "cannot be read" in caplog.text
    assert not list(tmp_path.glob(".snapshot-*"))  # no temporary file left behind


def test_a_served_stateful_model_journals_before_answering_and_replays_on_start(
    tmp_path: Path,
) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from abyssal.serve.app import ServedModel, create_app

    path = tmp_path / "journal.jsonl"
    url = "/v1/models/count/predict"
    with TestClient(
        create_app([ServedModel("count", "count:1", Counter(), "toy", None, Journal(path))])
    ) as c:
        assert c.post(url, json={"x": 2}).json()["predictions"] == [{"total": 2.0}]
        assert c.post(url, json={"instances": [{"x": 3}, {"x": 4}]}).status_code == 200
        assert c.post(url, json={"x": "bad"}).status_code == 422  # refused: not applied
        assert Journal(path).count == 3  # durable before the answers came back
    restarted = ServedModel("count", "count:1", Counter(), "toy", None, Journal(path))
    with TestClient(create_app([restarted])) as c:
        assert c.post(url, json={"x": 1}).json()["predictions"] == [{"total": 10.0}]


@pytest.mark.parametrize("snapshot_every", [0, 3])
def test_fraud_ingestion_survives_a_restart_with_the_same_scores(
    fraud_model: tuple[Path, Path],
    tmp_path: Path,
    snapshot_every: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without snapshots the journal is replayed; with them, the live graph comes back from the
    snapshot written when the service stopped."""
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from abyssal.core.store import ModelStore
    from abyssal.serve.app import create_app
    from abyssal.serve.models import load_served

    caplog.set_level(logging.INFO, logger="abyssal")
    home, sample = fraud_model
    store = ModelStore(home)
    rows = pd.read_csv(sample / "new_transactions.csv", dtype=str).head(6).to_dict("records")
    rows = [{k: v for k, v in r.items() if isinstance(v, str)} for r in rows]
    url = "/v1/fraud/transactions"

    def risks(answers: list[Any]) -> list[float]:
        return [a.json()["predictions"][0]["risk"] for a in answers]

    served = load_served(["fraud:1"], store=store)  # no journal: the uninterrupted reference
    assert served[0].follow is None and served[0].journal is None
    with TestClient(create_app(served)) as c:
        straight = risks([c.post(url, json=r) for r in rows])
    state = tmp_path / "state"

    def app() -> Any:
        served = load_served(
            ["fraud:1"], store=store, state_dir=state, snapshot_every=snapshot_every
        )
        return create_app(served)

    with TestClient(app()) as c:
        first = risks([c.post(url, json=r) for r in rows[:4]])
    assert first == straight[:4]
    journal = Journal(state / "fraud" / "journal.jsonl", snapshot_every=snapshot_every)
    assert journal.count == 4
    assert journal.snapshot_path.exists() == bool(snapshot_every)
    with TestClient(app()) as c:
        again = c.post(url, json=rows[1])  # acknowledged before the restart: still there
        assert again.status_code == 422 and "already in the live graph" in again.json()["error"]
        rest = risks([c.post(url, json=r) for r in rows[4:]])
    assert rest == straight[4:]  # as if the service had never stopped
    kept, replayed = (4, 0) if snapshot_every else (0, 4)
    assert f"{kept} requests from the snapshot, {replayed} replayed" in caplog.text


def test_a_journal_that_cannot_be_written_fails_the_request_without_a_rerun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from abyssal.serve.app import ServedModel, create_app

    journal = Journal(tmp_path / "journal.jsonl")
    counter = Counter()

    def full(requests: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(journal, "append", full)
    model = ServedModel("count", "count:1", counter, "toy", None, journal)
    with TestClient(create_app([model])) as c:
        answer = c.post("/v1/models/count/predict", json={"x": 5})
    assert answer.status_code == 500 and counter.total == 5  # applied once, never re-run
