"""Table checks: each check fires on a crafted table naming column and rows; schemas round-trip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from abyssal.core.errors import ConfigError, DataError
from abyssal.data.checks import (
    CHECKS,
    ColumnExpectation,
    TableSchema,
    check_table,
    infer_kind,
    infer_schema,
)


def reference() -> pd.DataFrame:
    """40 clean rows: an id key, a number, an integer, a category, a bool, a date and a label."""
    rng = np.random.default_rng(0)
    n = 40
    return pd.DataFrame(
        {
            "tx_id": [f"t{i:03d}" for i in range(n)],
            "amount": rng.uniform(1.0, 100.0, n).round(2),
            "items": rng.integers(1, 6, n),
            "shop": rng.choice(["north", "south", "west"], n),
            "online": rng.random(n) < 0.5,
            "day": pd.date_range("2026-01-01", periods=n, freq="D"),
            "label": np.r_[np.zeros(30, int), np.ones(10, int)],
        }
    )


def schema() -> TableSchema:
    return infer_schema(reference(), label="label", keys=["tx_id"])


def only(report, check: str):
    found = [f for f in report.findings if f.check == check]
    assert len(found) == 1, report.summary()
    return found[0]


def test_clean_table_passes_its_own_inferred_schema() -> None:
    report = check_table(reference(), schema(), source="train.csv")
    assert report.ok and report.findings == ()
    assert report.summary() == "train.csv: 40 rows, 7 columns: all checks passed"


def test_infer_schema_learns_kinds_ranges_categories_and_label() -> None:
    learnt = schema()
    kinds = {c.name: c.kind for c in learnt.columns}
    assert kinds == {
        "tx_id": "string",
        "amount": "number",
        "items": "integer",
        "shop": "string",
        "online": "bool",
        "day": "datetime",
        "label": "integer",
    }
    frame = reference()
    amount = learnt.column("amount")
    assert (amount.minimum, amount.maximum) == (frame.amount.min(), frame.amount.max())
    assert learnt.column("shop").categories == ("north", "south", "west")
    assert learnt.column("tx_id").categories is None  # keys get no categories
    assert learnt.label_classes == ("0", "1") and learnt.min_label_share == 0.125  # 25 % / 2
    assert learnt.severity == {"out_of_range": "warning"}


def test_infer_schema_widens_ranges_by_margin_and_missing_by_missing_margin() -> None:
    frame = pd.DataFrame({"x": [0.0, 10.0, np.nan, 5.0], "n": [1, 2, 3, 4]})
    learnt = infer_schema(frame, margin=0.1, missing_margin=0.05)
    x = learnt.column("x")
    assert (x.minimum, x.maximum) == pytest.approx((-1.0, 11.0))
    assert x.max_missing == pytest.approx(0.30)  # 1 of 4 missing, plus 0.05
    assert (learnt.column("n").minimum, learnt.column("n").maximum) == (0.0, 5.0)  # whole


def test_schema_round_trips_through_dict_json_and_yaml() -> None:
    learnt = schema()
    plain = learnt.to_dict()
    assert TableSchema.from_dict(plain) == learnt
    assert TableSchema.from_dict(json.loads(json.dumps(plain))) == learnt
    assert TableSchema.from_dict(yaml.safe_load(yaml.safe_dump(plain))) == learnt
    assert "minimum" not in plain["columns"][0]  # None values are left out


def test_from_dict_names_the_bad_key_and_value() -> None:
    plain = schema().to_dict()
    plain["columns"][1]["maxi"] = 3
    with pytest.raises(ConfigError, match=r"schema.columns\[1\]: unknown key 'maxi'; valid keys"):
        TableSchema.from_dict(plain)
    plain = schema().to_dict()
    plain["columns"][2]["kind"] = "float"
    with pytest.raises(ConfigError, match=r"columns\[2\].kind: 'float' is not one of"):
        TableSchema.from_dict(plain)
    with pytest.raises(ConfigError, match="key column 'nope' is not among the columns"):
        TableSchema((ColumnExpectation("a", "string"),), keys=("nope",))
    with pytest.raises(ConfigError, match="column 'a': minimum 5 is above maximum 1"):
        ColumnExpectation("a", "number", minimum=5, maximum=1)


def test_missing_required_column_suggests_a_close_header() -> None:
    frame = reference().rename(columns={"amount": "amont"})
    report = check_table(frame, schema())
    finding = only(report, "missing_column")
    assert finding.column == "amount" and finding.severity == "error"
    assert "did you mean 'amont'?" in finding.message
    assert only(report, "unexpected_column").column == "amont"
    assert not report.ok


def test_text_in_a_numeric_column_names_values_and_rows() -> None:
    frame = reference()
    frame["amount"] = frame["amount"].astype(object)
    frame.loc[2, "amount"] = "12,5"
    frame.loc[6, "amount"] = "n/a"
    finding = only(check_table(frame, schema()), "dtype")
    assert finding.column == "amount" and finding.count == 2 and finding.rows == (3, 7)
    assert (
        finding.message
        == "expected numbers; found 2 values that are not: '12,5' (row 3), 'n/a' (row 7)"
    )


def test_rows_are_one_based_data_rows_by_position_whatever_the_index() -> None:
    frame = reference()
    frame.index = frame.index + 1000
    frame.iloc[0, frame.columns.get_loc("items")] = 99  # the first data row
    finding = only(check_table(frame, schema()), "out_of_range")
    assert finding.rows == (1,) and "99 (row 1)" in finding.message


def test_out_of_range_and_integer_fractions() -> None:
    frame = reference()
    frame["amount"] = frame["amount"].astype(float)
    frame.loc[[4, 9], "amount"] = [-3.0, 1e6]
    frame["items"] = frame["items"].astype(float)
    frame.loc[0, "items"] = 2.5
    report = check_table(frame, schema())
    out = only(report, "out_of_range")
    assert (out.column, out.rows, out.severity) == ("amount", (5, 10), "warning")  # learnt range
    assert "found 2 values that are not: -3.0 (row 5), 1000000.0 (row 10)" in out.message
    dtype = only(report, "dtype")
    assert (dtype.column, dtype.rows) == ("items", (1,))
    assert dtype.message.startswith("expected whole numbers")
    stated = TableSchema((ColumnExpectation("age", "integer", minimum=0, maximum=130),))
    finding = only(check_table(pd.DataFrame({"age": [30, 131]}), stated), "out_of_range")
    assert finding.severity == "error" and "expected values in [0, 130]" in finding.message


def test_unknown_categories_are_a_warning_naming_rows() -> None:
    frame = reference()
    frame.loc[[3, 11], "shop"] = ["east", "North"]
    report = check_table(frame, schema())
    finding = only(report, "unknown_category")
    assert finding.severity == "warning" and report.ok
    assert finding.rows == (4, 12)
    assert "found 2 values that are not: 'east' (row 4), 'North' (row 12)" in finding.message


def test_missing_share_over_the_limit() -> None:
    frame = reference()
    frame["shop"] = frame["shop"].astype(object)
    frame.loc[[1, 5, 8], "shop"] = [None, "", "  "]  # None, empty and blank are all missing
    finding = only(check_table(frame, schema()), "missing_share")
    assert (finding.column, finding.count, finding.rows) == ("shop", 3, (2, 6, 9))
    assert finding.message == "expected no missing values; found 3 of 40 rows missing (7.5%)"
    limited = TableSchema((ColumnExpectation("x", "number", max_missing=0.5),))
    ok = check_table(pd.DataFrame({"x": [1.0, np.nan]}), limited)
    over = check_table(pd.DataFrame({"x": [np.nan, np.nan, 1.0]}), limited)
    assert ok.ok and "expected at most 50.0%" in only(over, "missing_share").message


def test_non_finite_numbers_written_or_stored() -> None:
    stored = pd.DataFrame({"x": [1.0, np.inf, 2.0, -np.inf]})
    spec = TableSchema((ColumnExpectation("x", "number"),))
    finding = only(check_table(stored, spec), "non_finite")
    assert finding.rows == (2, 4) and "inf (row 2), -inf (row 4)" in finding.message
    written = pd.DataFrame({"x": ["1", "nan", "inf", ""]})  # as read_table reads a CSV
    report = check_table(written, spec)
    assert only(report, "non_finite").rows == (2, 3)
    assert only(report, "missing_share").rows == (4,)  # the empty cell is missing, not NaN
    relaxed = TableSchema((ColumnExpectation("x", "number", finite=False),))
    assert check_table(stored, relaxed).ok


def test_duplicate_keys_name_the_repeat_and_the_first_row() -> None:
    frame = reference()
    frame.loc[7, "tx_id"] = "t002"
    frame.loc[9, "tx_id"] = "t002"
    finding = only(check_table(frame, schema()), "duplicate_key")
    assert (finding.column, finding.count, finding.rows) == ("tx_id", 2, (8, 10))
    assert "'t002' (row 8, first in row 3)" in finding.message
    two = TableSchema(
        (ColumnExpectation("a", "string"), ColumnExpectation("b", "integer")), keys=("a", "b")
    )
    pairs = pd.DataFrame({"a": ["x", "x", "y", "x"], "b": [1, 2, 1, 1]})
    finding = only(check_table(pairs, two), "duplicate_key")
    assert finding.column == "a, b" and "('x', 1) (row 4, first in row 1)" in finding.message


def test_label_balance_below_the_minimum() -> None:
    frame = reference().iloc[:32].copy()  # 30 zeros, 2 ones: 6.25 % < 12.5 %
    finding = only(check_table(frame, schema()), "label_balance")
    assert finding.column == "label" and finding.count == 2
    assert "class '1' is 6.2% (2 of 32)" in finding.message
    finding = only(check_table(reference().iloc[:30], schema()), "label_balance")
    assert "class '1' is 0.0% (0 of 30)" in finding.message  # a class that vanished


def test_too_few_rows_and_empty_table() -> None:
    strict = TableSchema((ColumnExpectation("x", "number"),), min_rows=10)
    finding = only(check_table(pd.DataFrame({"x": [1.0, 2.0]}), strict), "too_few_rows")
    assert finding.message == "expected at least 10 rows; found 2" and finding.column is None
    report = check_table(pd.DataFrame({"x": pd.Series([], dtype=float)}), strict)
    assert [f.check for f in report.findings] == ["too_few_rows"]


def test_every_problem_is_reported_at_once_with_summary_and_dict() -> None:
    frame = reference().drop(columns=["day"])
    frame["amount"] = frame["amount"].astype(object)
    frame.loc[0, "amount"] = "abc"
    frame.loc[1, "shop"] = "east"
    frame.loc[2, "tx_id"] = "t000"
    frame["online"] = frame["online"].astype(object)
    frame.loc[3, "online"] = "maybe"
    report = check_table(frame, schema(), source="new.csv")
    checks = [f.check for f in report.findings]
    assert checks == ["dtype", "unknown_category", "dtype", "missing_column", "duplicate_key"]
    assert [f.column for f in report.errors] == ["amount", "online", "day", "tx_id"]
    assert [f.column for f in report.warnings] == ["shop"]
    summary = report.summary()
    assert summary.splitlines()[0] == "new.csv: 40 rows, 6 columns: 4 errors, 1 warning"
    line = (
        "error     dtype             amount  1      1     expected numbers; found 1 value that is"
    )
    assert line + " not: 'abc' (row 1)" in summary.splitlines()
    plain = json.loads(json.dumps(report.to_dict()))
    assert plain["ok"] is False and plain["errors"] == 4
    assert plain["findings"][0]["rows"] == [1] and plain["findings"][0]["column"] == "amount"


def test_csv_text_frame_is_checked_by_what_the_text_says() -> None:
    text = reference().astype(str)  # every cell text, as read_table reads a CSV
    text["online"] = text["online"].str.lower()
    learnt = infer_schema(text, label="label", keys=["tx_id"])
    assert [c.kind for c in learnt.columns] == [
        "string", "number", "integer", "string", "bool", "datetime", "integer",
    ]  # fmt: skip
    assert check_table(text, learnt).ok and check_table(text, schema()).findings == ()
    text.loc[4, "day"] = "31/01/2026"
    finding = only(check_table(text, learnt), "dtype")
    assert finding.column == "day" and finding.rows == (5,) and "'31/01/2026'" in finding.message


def test_severity_override_and_duplicate_headers() -> None:
    plain = schema().to_dict()
    plain["severity"] = {"unknown_category": "error"}
    strict = TableSchema.from_dict(plain)
    frame = reference()
    frame.loc[0, "shop"] = "east"
    assert not check_table(frame, strict).ok
    with pytest.raises(ConfigError, match="unknown check 'colour'"):
        TableSchema((), severity={"colour": "error"})
    twice = pd.DataFrame([[1.0, 2.0]], columns=["x", "x"])
    finding = only(
        check_table(twice, TableSchema((ColumnExpectation("x", "number"),))), "duplicate_column"
    )
    assert finding.column == "x" and finding.count == 2


def test_bad_arguments_raise_data_error_naming_the_thing() -> None:
    with pytest.raises(DataError, match="expected a pandas DataFrame, got list"):
        check_table([[1]], schema())  # type: ignore[arg-type]
    with pytest.raises(DataError, match="column 'target': label column not found"):
        infer_schema(reference(), label="target")
    with pytest.raises(DataError, match="no rows"):
        infer_schema(reference().iloc[:0])


def test_infer_kind_and_check_names() -> None:
    assert infer_kind(pd.Series(["1", "2", None])) == "integer"
    assert infer_kind(pd.Series(["1.5", "2"])) == "number"
    assert infer_kind(pd.Series(["True", "false"])) == "bool"
    assert infer_kind(pd.Series(["2026-01-31T12:00:00Z"])) == "datetime"
    assert infer_kind(pd.Series(["a", "2"])) == "string"
    assert CHECKS[0] == "too_few_rows" and len(CHECKS) == len(set(CHECKS)) == 11
