"""Run records: folder layout, run.json, metrics.jsonl, logs, lookup by id and 'latest'."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime

import pytest
import yaml

from abyssal.core.errors import AbyssalError
from abyssal.core.runs import Run, abyssal_home, list_runs, new_run_id


@dataclass
class _Cfg:
    epochs: int = 3
    lr: float = 0.01


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ABYSSAL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_create_writes_folder_run_json_and_config(home):
    run = Run.create("train", "fraud", _Cfg(epochs=7))
    assert run.path == home / "runs" / run.id
    assert re.fullmatch(r"\d{8}-\d{6}-fraud-[0-9a-f]{4}", run.id)
    info = json.loads((run.path / "run.json").read_text())
    assert info["id"] == run.id
    assert (info["kind"], info["solution"], info["status"]) == ("train", "fraud", "running")
    assert info["outputs"] == [] and info["metrics"] == {}
    assert info["created"] <= info["updated"]
    assert yaml.safe_load(run.config_path.read_text()) == {"epochs": 7, "lr": 0.01}
    assert run.checkpoint_dir.is_dir()


def test_config_may_be_a_mapping(home):
    run = Run.create("bench", "defects", {"batch": 4})
    assert yaml.safe_load(run.config_path.read_text()) == {"batch": 4}


def test_new_run_id_format():
    run_id = new_run_id("CT Nodules!", datetime(2026, 11, 28, 10, 15, 2))
    assert re.fullmatch(r"20261128-101502-ct-nodules-[0-9a-f]{4}", run_id)


def test_abyssal_home_env_default_and_explicit(monkeypatch, tmp_path):
    monkeypatch.delenv("ABYSSAL_HOME", raising=False)
    assert abyssal_home().name == ".abyssal"
    monkeypatch.setenv("ABYSSAL_HOME", str(tmp_path / "h"))
    assert abyssal_home() == tmp_path / "h"
    assert abyssal_home(tmp_path / "x") == tmp_path / "x"


def test_explicit_root_wins_over_env(home, tmp_path):
    run = Run.create("train", "fraud", None, root=tmp_path / "other")
    assert run.path.parent == tmp_path / "other" / "runs"
    assert list_runs() == []
    assert Run.open(run.id, root=tmp_path / "other").id == run.id


def test_metrics_append_and_history(home):
    run = Run.create("train", "fraud", None)
    run.log_metrics({"epoch": 0, "train_loss": 0.5})
    run.log_metrics({"epoch": 1, "train_loss": 0.25, "auc": 0.9})
    rows = Run.open(run.id).metrics_history()
    assert rows == [{"epoch": 0, "train_loss": 0.5}, {"epoch": 1, "train_loss": 0.25, "auc": 0.9}]


def test_truncate_metrics_keeps_rows_up_to_epoch(home):
    run = Run.create("train", "fraud", None)
    for epoch in range(5):
        run.log_metrics({"epoch": epoch})
    run.truncate_metrics(2)
    assert [r["epoch"] for r in run.metrics_history()] == [0, 1, 2]
    run.log_metrics({"epoch": 3})
    assert [r["epoch"] for r in run.metrics_history()] == [0, 1, 2, 3]
    run.truncate_metrics(-1)
    assert run.metrics_history() == []


def test_damaged_metrics_line_is_named(home):
    run = Run.create("train", "fraud", None)
    (run.path / "metrics.jsonl").write_text('{"epoch": 0}\n{oops\n')
    with pytest.raises(AbyssalError, match="line 2"):
        run.metrics_history()


def test_status_outputs_metrics_persist(home):
    run = Run.create("train", "fraud", None)
    run.add_output("fraud@1")
    run.add_output("fraud@1")
    run.set_metrics({"auc": 0.93})
    run.set_status("failed", "boom")
    info = Run.open(run.id).info
    assert info["outputs"] == ["fraud@1"]
    assert info["metrics"] == {"auc": 0.93}
    assert (info["status"], info["error"]) == ("failed", "boom")
    with pytest.raises(AbyssalError, match="not one of: running, trained, completed"):
        run.set_status("exploded")


def test_log_appends_timestamped_lines(home):
    run = Run.create("train", "fraud", None)
    run.log("first")
    run.log("second\n")
    lines = (run.path / "log.txt").read_text().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["first", "second"]
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", lines[0])


def test_open_latest_and_list_order(home):
    first = Run.create("train", "fraud", None)
    second = Run.create("train", "defects", None)
    assert [r.id for r in list_runs()] == [second.id, first.id]
    assert Run.open("latest").id == second.id


def test_open_unknown_lists_recent_ids(home):
    run = Run.create("train", "fraud", None)
    with pytest.raises(AbyssalError, match=rf"no run 'nope'.*recent runs: {run.id}"):
        Run.open("nope")


def test_open_latest_without_runs(home):
    with pytest.raises(AbyssalError, match="no runs"):
        Run.open("latest")


def test_list_runs_shows_damaged_folders_and_open_says_what_is_wrong(home):
    run = Run.create("train", "fraud", None)
    (home / "runs" / "junk").mkdir()
    (home / "runs" / "bad").mkdir()
    (home / "runs" / "bad" / "run.json").write_text("{not json")
    (home / "runs" / "partial").mkdir()
    (home / "runs" / "partial" / "run.json").write_text('{"id": "partial", "kind": "train"}')
    (home / "runs" / ".hidden").mkdir()
    (home / "runs" / "stray.txt").write_text("not a run")
    listed = {r.id: r for r in list_runs()}
    assert sorted(listed) == sorted([run.id, "junk", "bad", "partial"])
    assert listed[run.id].status == "running"
    assert {listed[k].status for k in ("junk", "bad", "partial")} == {"damaged"}
    assert "run.json does not exist" in listed["junk"].info["error"]
    assert "not valid JSON" in listed["bad"].info["error"]
    assert "lacks solution, status" in listed["partial"].info["error"]
    with pytest.raises(AbyssalError, match=r"run bad is damaged: .*run.json is not valid JSON"):
        Run.open("bad")
    with pytest.raises(AbyssalError, match=r"no run 'stray\.txt'"):
        Run.open("stray.txt")


def test_log_metrics_appends_without_rewriting_the_file(home):
    run = Run.create("train", "fraud", None)
    run.log_metrics({"step": 1, "loss": 0.5})
    before = (run.path / "metrics.jsonl").stat().st_ino
    run.log_metrics({"step": 2, "loss": 0.25})
    # an atomic rewrite would have replaced the file (new inode); an append keeps it
    assert (run.path / "metrics.jsonl").stat().st_ino == before
    assert (run.path / "metrics.jsonl").read_text() == (
        '{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.25}\n'
    )


def test_torn_last_metrics_line_is_ignored_then_dropped_on_the_next_append(home):
    run = Run.create("train", "fraud", None)
    run.log_metrics({"step": 1})
    with (run.path / "metrics.jsonl").open("a") as fh:
        fh.write('{"step": 2, "lo')  # a process killed mid-write
    assert run.metrics_history() == [{"step": 1}]
    run.log_metrics({"step": 2})
    assert (run.path / "metrics.jsonl").read_text() == '{"step": 1}\n{"step": 2}\n'


def test_complete_last_line_without_newline_is_kept(home):
    run = Run.create("train", "fraud", None)
    (run.path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}')
    assert run.metrics_history() == [{"step": 1}, {"step": 2}]
    run.log_metrics({"step": 3})
    assert [r["step"] for r in run.metrics_history()] == [1, 2, 3]


def test_damaged_line_before_the_last_still_fails(home):
    run = Run.create("train", "fraud", None)
    (run.path / "metrics.jsonl").write_text('{"step": 1}\n{oops\n{"step": 3')
    with pytest.raises(AbyssalError, match="line 2: not valid JSON"):
        run.metrics_history()


def test_truncate_metrics_after_step_keeps_rows_without_a_step(home):
    run = Run.create("train", "fraud", None)
    for row in [{"step": 10}, {"note": "eval"}, {"step": 20}, {"step": 30, "epoch": 1}]:
        run.log_metrics(row)
    run.truncate_metrics_after_step(20)
    assert run.metrics_history() == [{"step": 10}, {"note": "eval"}, {"step": 20}]
    run.truncate_metrics_after_step(0)
    assert run.metrics_history() == [{"note": "eval"}]


def test_runs_and_store_share_one_home(home):
    from abyssal.core import home as home_module
    from abyssal.core.store import ModelStore

    assert abyssal_home is home_module.abyssal_home
    assert ModelStore().root == home == abyssal_home()
