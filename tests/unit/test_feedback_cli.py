"""``abyssal feedback add`` and ``show``: labels from CSV and JSON lines stored against logged
predictions, refusals printed cleanly with nothing stored, and the label delay in the counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from abyssal.cli.main import main
from abyssal.core.store import ModelStore
from abyssal.decide.feedback import labels_path, log_predictions, read_labels

DAY = 86400
T0 = 1_700_000_000  # 2023-11-14T22:13:20Z


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``fraud:1`` with four logged decisions, T1..T4, a day apart from ``T0``."""
    home = tmp_path / "home"
    monkeypatch.setenv("ABYSSAL_HOME", str(home))
    ModelStore(home).register("fraud", {"w": torch.ones(1)}, solution="fraud", config={},
                              metrics={})  # fmt: skip
    rows = [{"id": f"T{k + 1}", "version": "fraud:1", "score": 0.2 * (k + 1),
             "action": "approve", "event_time": T0 + k * DAY} for k in range(4)]  # fmt: skip
    log_predictions("fraud", rows, home=home)
    return home


def test_add_then_show(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "chargebacks.csv"
    csv.write_text("transaction_id,label,timestamp\nT1,1,2023-11-15T00:00:00Z\n"
                   f"T2,0,{T0 + DAY + 60}\n")  # fmt: skip
    assert main(["feedback", "add", "fraud", str(csv), "--source", "chargebacks"]) == 0
    assert capsys.readouterr().out.strip() == "stored 2 labels for fraud (source: chargebacks)"
    lines = tmp_path / "late.jsonl"
    lines.write_text(json.dumps({"id": "T3", "label": 1, "labelled_at": T0 + 20 * DAY}) + "\n")
    assert main(["feedback", "add", "fraud:1", str(lines), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"model": "fraud", "stored": 1, "source": "cli"}
    assert read_labels("fraud", home)["source"].tolist() == ["chargebacks", "chargebacks", "cli"]

    # nine days after T0 with a 7-day window: T3's label (day 20) has not arrived, and its
    # window has passed (event day 2); T4 (day 3) is still inside its window
    as_of = "2023-11-23T22:13:20Z"  # T0 + 9 days
    assert main(["feedback", "show", "fraud", "--as-of", as_of, "--window", "7d", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["as_of"] == T0 + 9 * DAY and shown["window_s"] == 7 * DAY
    assert shown["counts"] == {"logged": 4, "confirmed_positive": 1, "confirmed_negative": 1,
                               "negative_by_window": 1, "pending": 1}  # fmt: skip
    assert [(r["id"], r["label"]) for r in shown["rows"]] == [
        ("T1", 1.0), ("T2", 0.0), ("T3", 0.0), ("T4", None)]  # fmt: skip
    assert main(["feedback", "show", "fraud", "--as-of", str(T0 + 30 * DAY), "--window",
                 "7d"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "fraud as of 2023-12-14T22:13:20+00:00, window 7d (604800 s)" in out
    assert "T3" in out and "0 (window)" in out
    row = next(line.split() for line in out.splitlines() if line.startswith("logged"))
    assert row[:2] == ["logged", "confirmed"]
    counts = out.splitlines()[3].split()
    assert counts == ["4", "2", "1", "1", "0"]  # T3's late positive arrived by day 30


def test_show_without_a_window_counts_nothing_negative_by_silence(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["feedback", "show", "fraud", "--as-of", str(T0 + 100 * DAY), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["window_s"] is None and shown["counts"]["pending"] == 4


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["feedback", "add", "fruad", "{file}"], "unknown model 'fruad'"),
        (["feedback", "add", "fraud", "{file}"], "1 of 2 feedback records refused, nothing "
         "stored: record 1 (id 'T2'): label 2 is not a class of the model (0 or 1)"),
        (["feedback", "add", "fraud", "missing.csv"], "no such feedback file"),
        (["feedback", "show", "fraud", "--window", "soon"], "duration 'soon'"),
        (["feedback", "show", "fraud", "--as-of", "yesterday"], "--as-of: 'yesterday'"),
    ],
)  # fmt: skip
def test_refusals_are_printed_and_store_nothing(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], words: str
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(f"id,label,timestamp\nT1,1,{T0 + DAY}\nT2,2,{T0 + DAY}\n")
    assert main([a.replace("{file}", str(bad)) for a in args]) == 1
    captured = capsys.readouterr()
    assert words in captured.err and "Traceback" not in captured.err
    assert not labels_path("fraud", home).exists()
