"""The audit policy file and the audit's own checks: defaults, every bad setting refused by
name, metric bounds judged, and the sensitive attribute joined to held-out items by id."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from abyssal.core.errors import AbyssalError, ConfigError, DataError
from abyssal.govern.audit import _metric_check, _with_attribute, fairness_gaps
from abyssal.govern.policy import MetricBound, load_policy


def test_an_empty_policy_asks_nothing_but_the_card(tmp_path: Path) -> None:
    policy = load_policy(None)
    assert policy.name == "default" and policy.metrics == []
    assert policy.fairness.attribute is None and policy.privacy.pii == "report"
    path = tmp_path / "bank.yaml"
    path.write_text("metrics: [{metric: test_auprc, min: 0.3}]\nfairness: {attribute: segment}\n")
    loaded = load_policy(path, ["privacy.pii=forbid"])
    assert loaded.name == "bank" and loaded.metrics[0].min == 0.3
    assert loaded.privacy.pii == "forbid" and loaded.fairness.attribute == "segment"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("metrics: [{metric: test_auprc}]", "min' or 'max"),
        ("metrics: [{min: 0.3}]", "needs a 'metric'"),
        ("fairness: {max_equalized_odds_difference: 2}", "max_equalized_odds_difference"),
        ("fairness: {mitigate: fairest}", "mitigate"),
        ("privacy: {pii: hide}", "pii"),
        ("privacy: {max_epsilon: -1}", "max_epsilon"),
        ("explain: {items: -2}", "explain.items"),
        ("colour: red", "colour"),
    ],
)
def test_bad_settings_are_refused_by_name(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=named):
        load_policy(path)


def test_metric_bounds_are_judged_with_the_value_named() -> None:
    metrics = {"test_auprc": 0.62, "epsilon": 8.0, "bad": float("nan")}
    assert _metric_check(MetricBound("test_auprc", min=0.5), metrics).passed
    low = _metric_check(MetricBound("test_auprc", min=0.7), metrics)
    assert not low.passed and low.detail == "0.62 < 0.7"
    assert not _metric_check(MetricBound("epsilon", max=5.0), metrics).passed
    assert "no finite bad" in _metric_check(MetricBound("bad", min=0), metrics).detail
    assert "no finite absent" in _metric_check(MetricBound("absent", max=1), metrics).detail


def test_the_attribute_is_joined_to_held_out_items_by_id(tmp_path: Path) -> None:
    table = tmp_path / "accounts.csv"
    table.write_text("user_id,segment\nU1,A\nU2,B\nU3,B\n")
    frame = pd.DataFrame({"id": ["U2", "U1"], "label": [1, 0], "score": [0.9, 0.2]})
    f = SimpleNamespace(attribute="segment", table=str(table), key="user_id")
    joined = _with_attribute(frame, f, SimpleNamespace(config={}, ref="fraud:1"))
    assert joined["segment"].tolist() == ["B", "A"]
    by_row = SimpleNamespace(attribute="segment", table=str(table), key=None)
    rows = _with_attribute(pd.DataFrame({"id": [3, 1], "label": [0, 1], "score": [0.1, 0.5]}),
                           by_row, SimpleNamespace(config={}, ref="t:1"))  # fmt: skip
    assert rows["segment"].tolist() == ["B", "A"]
    with pytest.raises(DataError, match="1 of 2 held-out items have no 'segment'"):
        _with_attribute(frame.assign(id=["U2", "U9"]), f, SimpleNamespace(config={}, ref="x"))
    with pytest.raises(DataError, match="no column 'region'"):
        _with_attribute(frame, SimpleNamespace(attribute="region", table=str(table), key=None),
                        SimpleNamespace(config={}, ref="x"))  # fmt: skip
    with pytest.raises(AbyssalError, match=r"give fairness\.table"):
        _with_attribute(frame, SimpleNamespace(attribute="segment", table=None, key=None),
                        SimpleNamespace(config={}, ref="fraud:1"))  # fmt: skip


def test_the_gaps_are_read_from_either_layout_of_a_report() -> None:
    class Report:
        def __init__(self, values: dict) -> None:
            self.values = values

        def to_dict(self) -> dict:
            return self.values

    plain = fairness_gaps(Report({"equalized_odds_difference": 0.2,
                                  "demographic_parity_difference": 0.1}))  # fmt: skip
    assert plain["equalized_odds_difference"] == 0.2
    assert plain["demographic_parity_difference"] == 0.1
    assert set(plain) == {"equalized_odds_difference", "demographic_parity_difference",
                          "tpr_difference", "fpr_difference"}  # fmt: skip
    nested = fairness_gaps(Report({"equalized_odds_difference": {"value": 0.3, "low": 0.1}}))
    assert nested["equalized_odds_difference"] == 0.3
    assert nested["demographic_parity_difference"] != nested["demographic_parity_difference"]


def test_a_model_of_more_classes_is_audited_as_a_decision_about_one_class() -> None:
    from abyssal.govern.audit import one_vs_rest

    frame = pd.DataFrame({"id": [1, 2, 3], "label": ["crack", "scratch", "pit"],
                          "prediction": ["crack", "crack", "pit"],
                          "probability": [0.9, 0.6, 0.8]})  # fmt: skip
    decided = one_vs_rest(frame, "crack")
    assert decided["label"].tolist() == [1, 0, 0] and decided["score"].tolist() == [1.0, 1.0, 0.0]
    with pytest.raises(AbyssalError, match="the classes are crack, pit, scratch"):
        one_vs_rest(frame, None)
    with pytest.raises(AbyssalError, match="'dent'"):
        one_vs_rest(frame, "dent")
    binary = pd.DataFrame({"id": [1], "label": [1], "score": [0.3]})
    assert one_vs_rest(binary, None) is binary
