"""Confirmed-label feedback: the prediction log, the feedback store (every refusal leaves the
files as they were), the label delay (silence inside the label window is not a negative), and
the deciding predictor's log of what it decided."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from abyssal.core.errors import ConfigError, DataError, StoreError
from abyssal.core.store import ModelStore
from abyssal.decide.feedback import (
    add_feedback,
    feedback_counts,
    labelled_rows,
    labels_path,
    log_predictions,
    parse_duration,
    predictions_path,
    read_labels,
    read_predictions,
    resolve_labels,
    to_unix_seconds,
)
from abyssal.decide.feedback_files import read_feedback_file
from abyssal.decide.points import OperatingPoint
from abyssal.decide.predictor import DecidingPredictor

NOW = 1_000_000.0
DAY = 86400


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A store with a binary model ``fraud`` and a three-class ``defect``; ``fraud`` has logged
    T1 (event 1000), T2 (2000) and 7 (3000), ``defect`` D1 (1000)."""
    store = ModelStore(tmp_path)
    store.register("fraud", {"w": torch.ones(1)}, solution="fraud", config={}, metrics={})
    spec = {"model_spec": {"classes": ["ok", "scratch", "dent"]}}
    store.register("defect", {"w": torch.ones(1)}, solution="defect", config=spec, metrics={})
    rows = [
        {"id": "T1", "version": "fraud:1", "score": 0.9, "action": "block", "event_time": 1000},
        {"id": "T2", "version": "fraud:1", "score": 0.2, "action": "approve", "event_time": 2000},
        {"id": 7, "version": "fraud:1", "score": None, "action": None, "event_time": 3000},
    ]
    assert log_predictions("fraud", rows, home=tmp_path) == 3
    log_predictions("defect", [{"id": "D1", "version": "defect:1", "event_time": 1000}],
                    home=tmp_path)  # fmt: skip
    return tmp_path


def add(home: Path, model: str, records: Any, **kw: Any) -> int:
    return add_feedback(model, records, home=home, now=NOW, **kw)


def test_the_prediction_log_round_trips(home: Path) -> None:
    frame = read_predictions("fraud", home)
    assert frame["id"].tolist() == ["T1", "T2", "7"]  # ids are text: 7 and "7" are one id
    assert frame["event_time"].tolist() == [1000, 2000, 3000]
    assert frame["score"].iloc[0] == 0.9 and math.isnan(frame["score"].iloc[2])
    assert frame["action"].iloc[0] == "block" and frame["version"].iloc[1] == "fraud:1"
    log_predictions("fraud", [{"id": "T3", "version": "fraud:1",
                               "event_time": "1970-01-01T01:00:00Z"}], home=home)  # fmt: skip
    assert read_predictions("fraud", home)["event_time"].iloc[-1] == 3600
    lines = predictions_path("fraud", home).read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["logged"].endswith("+00:00")


def test_a_torn_last_line_is_skipped_and_spoils_no_later_line(home: Path) -> None:
    path = predictions_path("fraud", home)
    with path.open("a") as f:
        f.write('{"id": "T9", "vers')  # a crash in the middle of a write
    log_predictions("fraud", [{"id": "T4", "version": "fraud:1", "event_time": 4000}], home=home)
    assert read_predictions("fraud", home)["id"].tolist() == ["T1", "T2", "7", "T4"]


def test_labels_are_stored_with_their_time_and_source(home: Path) -> None:
    records = [
        {"id": "T1", "label": 1, "timestamp": "1970-01-02T00:00:00Z"},
        {"transaction_id": 7, "label": 0, "labelled_at": 5000.5, "source": "analyst"},
        {"id": "T2", "label": 1.0, "timestamp": "1970-01-01T01:00:00"},  # naive: UTC
    ]
    assert add(home, "fraud:1", records, source="chargebacks") == 3
    labels = read_labels("fraud", home)
    assert labels["id"].tolist() == ["T1", "7", "T2"]
    assert labels["label"].tolist() == [1, 0, 1]
    assert labels["labelled_at"].tolist() == [86400.0, 5000.5, 3600.0]
    assert labels["source"].tolist() == ["chargebacks", "analyst", "chargebacks"]
    assert all(labels["received"].str.endswith("+00:00"))


BAD = [
    ([], "no feedback records"),
    ({"id": "T1", "label": 1, "timestamp": 5000}, "must be a list"),
    (["T1"], "record 0 is not an object"),
    ([{"label": 1, "timestamp": 5000}], "record 0: missing id (or transaction_id)"),
    ([{"id": "T1", "timestamp": 5000}], "record 0 (id 'T1'): missing label"),
    ([{"id": "T1", "label": 1}], "record 0 (id 'T1'): missing timestamp (or labelled_at)"),
    ([{"id": "T1", "label": 2, "timestamp": 5000}], "label 2 is not a class of the model (0 or 1)"),
    ([{"id": "T1", "label": -1, "timestamp": 5000}], "label -1 is not a class"),
    ([{"id": "T1", "label": 0.5, "timestamp": 5000}], "label 0.5 is not a class (0 or 1)"),
    ([{"id": "T1", "label": True, "timestamp": 5000}], "label True is not a class"),
    ([{"id": "T1", "label": "yes", "timestamp": 5000}], "label 'yes' is not a class"),
    ([{"id": "T1", "label": float("nan"), "timestamp": 5000}], "label nan is not a class"),
    ([{"id": "T1", "label": 1, "timestamp": "next tuesday"}], "cannot be read as a time"),
    ([{"id": "T1", "label": 1, "timestamp": True}], "True is not a time"),
    ([{"id": "T1", "label": 1, "timestamp": NOW + 61}], "is in the future"),
    ([{"id": "T2", "label": 1, "timestamp": 1999}], "before its prediction's event time"),
    ([{"id": "T9", "label": 1, "timestamp": 5000}], "1 id has no logged prediction of fraud"),
    ([{"id": "T1", "label": 1, "timestamp": 5000}, {"id": "T2", "label": 3, "timestamp": 5000}],
     "1 of 2 feedback records refused, nothing stored: record 1 (id 'T2')"),
]  # fmt: skip


@pytest.mark.parametrize(("records", "words"), BAD)
def test_a_bad_batch_is_refused_whole_and_nothing_is_written(
    home: Path, records: Any, words: str
) -> None:
    add(home, "fraud", [{"id": "T1", "label": 0, "timestamp": 4000}])
    before = labels_path("fraud", home).read_bytes()
    with pytest.raises(DataError) as e:
        add(home, "fraud", records)
    assert words in str(e.value)
    assert labels_path("fraud", home).read_bytes() == before


def test_the_first_refusal_creates_no_file(home: Path) -> None:
    with pytest.raises(DataError, match="record 0"):
        add(home, "fraud", [{"id": "T1", "label": 5, "timestamp": 5000}])
    assert not labels_path("fraud", home).exists()


def test_unknown_models_and_versions_are_named(home: Path) -> None:
    with pytest.raises(StoreError, match=r"unknown model 'fruad'.*known models: defect, fraud"):
        add(home, "fruad", [{"id": "T1", "label": 1, "timestamp": 5000}])
    with pytest.raises(StoreError, match="no version or alias 'production'"):
        add(home, "fraud:production", [{"id": "T1", "label": 1, "timestamp": 5000}])
    assert not labels_path("fraud", home).exists()


def test_unknown_ids_are_named_at_most_five(home: Path) -> None:
    records = [{"id": f"X{k}", "label": 1, "timestamp": 5000} for k in range(7)]
    with pytest.raises(DataError) as e:
        add(home, "fraud", records)
    message = str(e.value)
    assert "7 ids have no logged prediction" in message and "and 2 more" in message
    assert "'X4'" in message and "'X5'" not in message


def test_many_refusals_are_summed_up(home: Path) -> None:
    records = [{"id": "T1", "label": 9, "timestamp": 5000} for _ in range(8)]
    with pytest.raises(DataError) as e:
        add(home, "fraud", records)
    assert "8 of 8 feedback records refused" in str(e.value)
    assert "record 4 (id 'T1')" in str(e.value) and "record 5" not in str(e.value)
    assert "and 3 more" in str(e.value)


def test_a_clock_skew_of_a_minute_is_allowed(home: Path) -> None:
    assert add(home, "fraud", [{"id": "T1", "label": 1, "timestamp": NOW + 59}]) == 1


def test_a_multiclass_model_takes_its_classes(home: Path) -> None:
    assert add(home, "defect", [{"id": "D1", "label": 2, "timestamp": 5000}]) == 1
    with pytest.raises(DataError, match=r"label 3 is not a class of the model \(0 to 2\)"):
        add(home, "defect", [{"id": "D1", "label": 3, "timestamp": 5000}])


def test_the_latest_label_wins(home: Path) -> None:
    add(home, "fraud", [{"id": "T1", "label": 0, "timestamp": 9000}])
    add(home, "fraud", [{"id": "T1", "label": 1, "timestamp": 5000}])  # stored later, older
    add(home, "fraud", [{"id": "T2", "label": 1, "timestamp": 5000},
                        {"id": "T2", "label": 0, "timestamp": 5000}])  # fmt: skip
    rows = labelled_rows("fraud", as_of=10_000, window_s=None, home=home).set_index("id")
    assert rows.loc["T1", "label"] == 0.0 and rows.loc["T1", "labelled_at"] == 9000
    assert rows.loc["T2", "label"] == 0.0  # same time: the line stored last
    earlier = labelled_rows("fraud", as_of=6000, window_s=None, home=home).set_index("id")
    assert earlier.loc["T1", "label"] == 1.0  # the correction at 9000 is not seen yet


# -- label delay -------------------------------------------------------------------------------


def frames(label_at: float | None, label: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    predictions = pd.DataFrame({"id": ["a"], "event_time": [0]})
    rows = [] if label_at is None else [{"id": "a", "label": label, "labelled_at": label_at}]
    return predictions, pd.DataFrame(rows, columns=["id", "label", "labelled_at"])


@pytest.mark.parametrize(
    ("label_at", "label", "as_of", "expected"),
    [
        (None, 1, 50, None),  # inside its window, no label: pending, not a negative
        (None, 1, 100, 0.0),  # the window has passed: negative
        (80, 1, 50, None),  # a positive arriving after as_of is not seen
        (200, 1, 150, 0.0),  # ... even when it will come: at 150 the window had passed
        (120, 1, 150, 1.0),  # a late positive (after its window) counts once it arrived
        (30, 0, 50, 0.0),  # a confirmed negative inside the window
        (30, 1, 30, 1.0),  # arrived exactly at as_of: seen
    ],
)
def test_the_label_delay(
    label_at: float | None, label: int, as_of: float, expected: float | None
) -> None:
    predictions, labels = frames(label_at, label)
    (got,) = resolve_labels(predictions, labels, as_of=as_of, window_s=100).tolist()
    assert (math.isnan(got) and expected is None) or got == expected


def test_the_label_delay_keeps_the_index_and_has_no_negative_for_many_classes() -> None:
    predictions = pd.DataFrame({"id": ["a", "b", "c"], "event_time": [0, 0, 0]}, index=[5, 6, 7])
    labels = pd.DataFrame({"id": ["b"], "label": [2], "labelled_at": [10.0]})
    out = resolve_labels(predictions, labels, as_of=1000, window_s=100, n_classes=3)
    assert out.index.tolist() == [5, 6, 7]
    assert math.isnan(out[5]) and out[6] == 2.0 and math.isnan(out[7])
    binary = resolve_labels(predictions, labels.assign(label=[1]), as_of=1000, window_s=100)
    assert binary.tolist() == [0.0, 1.0, 0.0]
    assert resolve_labels(predictions, labels, as_of=1000, window_s=None).isna().sum() == 2
    with pytest.raises(ConfigError, match="label window must be >= 0"):
        resolve_labels(predictions, labels, as_of=1000, window_s=-1)


def test_labelled_rows_take_each_ids_first_prediction_made_by_as_of(home: Path) -> None:
    log_predictions(
        "fraud", [{"id": "T1", "version": "fraud:1", "score": 0.1, "event_time": 1000}], home=home
    )  # a replay: same id again
    add(home, "fraud", [{"id": "T1", "label": 1, "timestamp": 1500}])
    rows = labelled_rows("fraud:1", as_of=2500, window_s=1000, home=home)
    assert list(rows.columns) == ["id", "version", "score", "action", "event_time", "label",
                                  "labelled_at"]  # fmt: skip
    assert rows["id"].tolist() == ["T1", "T2"]  # 7 was predicted at 3000, after as_of
    assert rows["score"].tolist() == [0.9, 0.2]  # the first logged prediction of T1
    assert rows["label"].iloc[0] == 1.0 and math.isnan(rows["label"].iloc[1])
    later = labelled_rows("fraud", as_of="1970-01-01T01:00:00Z", window_s=1000, home=home)
    assert feedback_counts(later) == {"logged": 3, "confirmed_positive": 1,
                                      "confirmed_negative": 0, "negative_by_window": 1,
                                      "pending": 1}  # fmt: skip


# -- timestamps, durations, files ---------------------------------------------------------------


def test_timestamps_and_durations() -> None:
    assert to_unix_seconds("1970-01-02T00:00:00Z") == 86400.0
    assert to_unix_seconds("1970-01-02T02:00:00+02:00") == 86400.0
    assert to_unix_seconds("1970-01-02") == 86400.0
    assert to_unix_seconds("86400") == 86400.0 and to_unix_seconds(1.5) == 1.5
    for bad in (True, float("nan"), "soon", None, [1]):
        with pytest.raises(ValueError):
            to_unix_seconds(bad)
    assert [parse_duration(t) for t in ("30d", "12h", "3600", "15m", "2w", "90s")] == [
        30 * DAY, 12 * 3600, 3600, 900, 14 * DAY, 90]  # fmt: skip
    with pytest.raises(ConfigError, match="write seconds"):
        parse_duration("-5d")


def test_feedback_files(tmp_path: Path) -> None:
    csv = tmp_path / "labels.csv"
    csv.write_text("transaction_id,label,labelled_at\n007,1,2026-03-01T00:00:00Z\nT2,0.5,\n")
    assert read_feedback_file(csv) == [
        {"transaction_id": "007", "label": 1, "labelled_at": "2026-03-01T00:00:00Z"},
        {"transaction_id": "T2", "label": 0.5, "labelled_at": None},
    ]
    lines = tmp_path / "labels.jsonl"
    lines.write_text('{"id": "a", "label": 1, "timestamp": 5}\n\n{"id": "b"}\n')
    assert [r["id"] for r in read_feedback_file(lines)] == ["a", "b"]
    lines.write_text('{"id": "a"}\nnot json\n')
    with pytest.raises(DataError, match="row 2: not a JSON line"):
        read_feedback_file(lines)
    with pytest.raises(DataError, match="no such feedback file"):
        read_feedback_file(tmp_path / "missing.csv")


# -- the deciding predictor's log ----------------------------------------------------------------


class Scorer:
    """Parses ``{"x": score, ...}``; answers ``{"risk": x}`` plus the item's ``transaction_id``
    when it has one."""

    def parse(self, payload: Mapping[str, Any]) -> Any:
        return dict(payload) if "transaction_id" in payload else float(payload["x"])

    def predict(self, items: Sequence[Any]) -> list[Any]:
        return [{"risk": i["x"], "transaction_id": i["transaction_id"]} if isinstance(i, dict)
                else {"risk": i} for i in items]  # fmt: skip


POINT = OperatingPoint("p", "precision", 0.5, 0.8, {}, {})


def deciding(home: Path, **kw: Any) -> DecidingPredictor:
    return DecidingPredictor(Scorer(), POINT, lambda r: r["risk"], ref="fraud:1", home=home, **kw)


def test_the_deciding_predictor_logs_what_it_decided(tmp_path: Path) -> None:
    predictor = deciding(tmp_path)
    requests = [
        {"transaction_id": "A", "x": 0.9, "timestamp": "1970-01-01T00:16:40Z"},
        {"id": "B", "x": 0.6, "timestamp": 2000},  # the id and time come from the request
        {"x": 0.1},  # no id: not logged
    ]
    answers = predictor.predict([predictor.parse(r) for r in requests])
    assert [a["decision"]["action"] for a in answers] == ["block", "review", "approve"]
    assert "transaction_id" not in answers[1]  # the wrapped predictor never saw the tag
    logged = read_predictions("fraud", tmp_path)
    assert logged["id"].tolist() == ["A", "B"]
    assert logged["event_time"].tolist() == [1000, 2000]
    assert logged["action"].tolist() == ["block", "review"]
    assert logged["score"].tolist() == [0.9, 0.6] and set(logged["version"]) == {"fraud:1"}
    assert len(predictions_path("fraud", tmp_path).read_text().splitlines()) == 2


def test_an_item_without_a_time_is_logged_at_the_time_it_was_decided(tmp_path: Path) -> None:
    import time

    predictor = deciding(tmp_path)
    before = int(time.time())
    predictor.predict([predictor.parse({"id": "C", "x": 0.2})])
    (event_time,) = read_predictions("fraud", tmp_path)["event_time"].tolist()
    assert before <= event_time <= int(time.time())


def test_logging_can_be_turned_off_and_a_failing_log_fails_no_answer(tmp_path: Path) -> None:
    off = deciding(tmp_path, log_predictions=False)
    assert off.predict([off.parse({"id": "A", "x": 0.9})])[0]["decision"]["action"] == "block"
    assert not predictions_path("fraud", tmp_path).exists()
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    broken = deciding(blocked)
    assert broken.predict([broken.parse({"id": "A", "x": 0.9})])[0]["decision"]["score"] == 0.9
