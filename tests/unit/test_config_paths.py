"""Path fields: marked with ``field(..., path=True)``, made absolute (nested sections too) so a
stored config finds its files from any working directory."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from abyssal.core.config import field, path_values, resolve_paths
from abyssal.solutions.fraud.config import FraudConfig
from abyssal.solutions.tabular.config import TabularConfig


@dataclasses.dataclass
class _Inner:
    table: str | None = field(None, help="a file", path=True)
    name: str = field("plain.csv", help="not a path, though it looks like one")


@dataclasses.dataclass
class _Outer:
    data: _Inner = field(default_factory=_Inner, help="data")
    model: str | None = field(None, help="a folder", path=True)
    checked: int = 0

    def __post_init__(self) -> None:
        self.checked += 1


def test_marked_fields_anywhere_are_made_absolute_and_nothing_else(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _Outer(data=_Inner(table="sub/../t.csv"), model="~/models/m")
    resolved = resolve_paths(cfg)
    assert resolved.data.table == str(tmp_path / "t.csv")
    assert resolved.model == str(Path.home() / "models" / "m")
    assert resolved.data.name == "plain.csv"  # unmarked fields are left alone
    assert resolved.checked == 2  # the copy was validated again
    assert cfg.data.table == "sub/../t.csv"  # the original is not changed
    assert path_values(resolved) == {"data.table": resolved.data.table, "model": resolved.model}


def test_base_none_urls_and_absolute_paths(tmp_path):
    base = tmp_path / "project"
    assert resolve_paths(_Outer(data=_Inner(table="t.csv")), base).data.table == str(base / "t.csv")
    untouched = _Outer(data=_Inner(table="s3://bucket/t.csv"), model=str(tmp_path))
    assert resolve_paths(untouched, base) is untouched
    assert resolve_paths(_Outer(), base) == _Outer()
    assert path_values(_Outer()) == {}


def test_the_solutions_mark_their_path_fields():
    assert path_values(resolve_paths(FraudConfig(), "/base")) == {}  # none set by default
    cfg = FraudConfig()
    cfg.data.path, cfg.data.labels_path, cfg.data.features_path = "t.csv", "l.csv", "f.csv"
    cfg.live.history = "h.csv"
    assert path_values(resolve_paths(cfg, "/base")) == {
        "data.path": "/base/t.csv",
        "data.labels_path": "/base/l.csv",
        "data.features_path": "/base/f.csv",
        "live.history": "/base/h.csv",
    }
    tabular = TabularConfig()
    tabular.data.path = "table.csv"
    assert path_values(resolve_paths(tabular, "/base")) == {"data.path": "/base/table.csv"}
