"""The rules baseline: features from earlier rows only, the strongest action wins, bad files and
bad tables are named, and the model-versus-rules comparison is the arithmetic it claims."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from abyssal.core.errors import ConfigError, DataError
from abyssal.decide.rules import RuleSet, apply_rules, compare

TABLE = pd.DataFrame(
    {
        "timestamp": [100, 0, 50, 4000, 4001, 4002],  # not in time order on purpose
        "user_id": ["a", "a", "a", "a", "b", "a"],
        "device_id": ["d1", "d1", "d2", "d1", "d1", "d3"],
        "amount": [10.0, 20.0, 30.0, 40.0, 50.0, 3000.0],
    }
)


def ruleset(**extra) -> RuleSet:
    return RuleSet.from_dict(
        {
            "time": "timestamp",
            "features": [
                {"name": "n_1h", "count": "user_id", "window": 3600},
                {"name": "spent_1h", "sum": "amount", "by": "user_id", "window": 3600},
                {"name": "new_device", "first_seen": "device_id", "by": "user_id"},
            ],
            "rules": [
                {"name": "big", "when": "amount > 2000", "action": "review"},
                {
                    "name": "new device, big",
                    "when": "new_device == 1 and amount > 1000",
                    "action": "block",
                },
            ],
            **extra,
        }
    )


def test_features_look_only_at_earlier_rows_within_the_window() -> None:
    out = apply_rules(TABLE, ruleset())
    # user a at t=0, 50, 100, 4000, 4002: rows of the hour before each (4000 sees none: 100
    # is more than an hour before it)
    assert out["n_1h"].tolist() == [2, 0, 1, 0, 0, 1]
    assert out["spent_1h"].tolist() == [50.0, 0.0, 20.0, 0.0, 0.0, 40.0]
    assert out["new_device"].tolist() == [0, 1, 1, 0, 1, 1]  # b's first d1 is new for b


def test_the_strongest_action_wins_and_names_its_rules() -> None:
    out = apply_rules(TABLE, ruleset())
    assert out["action"].tolist() == ["approve"] * 5 + ["block"]
    assert out["rules"].iloc[-1] == "big,new device, big"
    assert list(TABLE.columns) == ["timestamp", "user_id", "device_id", "amount"]  # untouched


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rules": []}, "no rules"),
        ({"rules": [{"name": "x", "when": "amount > 1", "action": "shout"}]}, "review or block"),
        ({"features": [{"name": "n", "count": "user_id"}]}, "window"),
        ({"features": [{"name": "s", "sum": "amount", "window": 5}]}, "by: KEY"),
        ({"colour": 1}, "unknown keys"),
    ],
)
def test_bad_rule_files_are_named(change: dict, message: str) -> None:
    base = {"rules": [{"name": "big", "when": "amount > 2000"}]}
    with pytest.raises(ConfigError, match=message):
        RuleSet.from_dict({**base, **change})


def test_bad_tables_and_expressions_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no column \['device_id'"):
        apply_rules(TABLE.drop(columns=["device_id"]), ruleset())
    bad = RuleSet.from_dict({"rules": [{"name": "typo", "when": "amont > 5"}]})
    with pytest.raises(ConfigError, match=r"rule 'typo'.*columns"):
        apply_rules(TABLE, bad)
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - {name: big, when: 'amount > 20', action: block}\n")
    assert apply_rules(TABLE, RuleSet.load(path))["action"].tolist().count("block") == 4
    with pytest.raises(ConfigError, match="does not exist"):
        RuleSet.load(tmp_path / "none.yaml")


def test_the_comparison_is_the_arithmetic_it_claims() -> None:
    y = np.array([1, 0, 0, 1, 0, 0, 1, 0, 0, 0])
    s = np.array([0.9, 0.8, 0.1, 0.7, 0.2, 0.3, 0.05, 0.4, 0.6, 0.5])
    a = np.array(["block", "review", "approve", "approve", "approve", "approve",
                  "review", "approve", "approve", "approve"])  # fmt: skip
    got = compare(y, s, a)
    assert got["rules_interception"] == pytest.approx(2 / 3)  # rows 0 and 6 of 0, 3, 6
    assert got["rules_review_share"] == pytest.approx(0.3)
    # top scores: 0.9 (pos), 0.8, 0.7 (pos): two of three positives in the top 3 rows
    assert got["model_review_share_at_rules_interception"] == pytest.approx(0.3)
    # the rules handle 3 rows; the model's top 3 hold 2 positives
    assert got["model_interception_at_rules_review_share"] == pytest.approx(2 / 3)
    with pytest.raises(DataError, match="no positive"):
        compare(np.zeros(3), s[:3], a[:3])


def test_rules_without_windowed_features_need_no_time_column() -> None:
    accounts = pd.DataFrame({"negative_in": [0, 1, 4], "ratings_in": [9, 2, 30]})
    rules = RuleSet.from_dict({"rules": [
        {"name": "several negatives", "when": "negative_in >= 3", "action": "block"},
        {"name": "new, rated badly", "when": "ratings_in < 5 and negative_in >= 1",
         "action": "review"}]})  # fmt: skip
    assert apply_rules(accounts, rules)["action"].tolist() == ["approve", "review", "block"]


def test_a_decided_prediction_file_keeps_its_cells_as_they_were(tmp_path: Path) -> None:
    """``decide_file`` rewrites a CSV with the decision columns added and every other cell as
    written (ids with leading zeros stay ids)."""
    from types import SimpleNamespace

    from abyssal.decide.frames import decide_file
    from abyssal.decide.points import OperatingPoint

    path = tmp_path / "scores.csv"
    path.write_text("id,p_yes,note\n007,0.9,\n010,0.2,kept\n")
    solution = SimpleNamespace(decision_score=lambda _l: lambda r: float(r["p_yes"]))
    loaded = SimpleNamespace(solution=solution, version=SimpleNamespace(ref="m:1", name="m"))
    point = OperatingPoint("p", "review_budget", 0.5, None, {}, {})
    decide_file(loaded, path, point)
    lines = path.read_text().splitlines()
    assert lines[0] == "id,p_yes,note,decision,decision_score,decision_point,decision_reason"
    assert lines[1].startswith("007,0.9,,review,0.9,p,")
    assert lines[2].startswith("010,0.2,kept,approve")
