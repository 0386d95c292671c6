"""Load traces: the diurnal shape, CSV and JSON-lines reading (binned, with sensitivity), the
round trip through :func:`write_trace`, and every malformed input named by row or line and
column."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from abyssal.core.errors import ConfigError, DataError
from abyssal.deploy.trace import Trace, diurnal, read_trace, write_trace


def test_diurnal_has_a_night_trough_a_morning_peak_a_lunch_dip_and_the_main_peak() -> None:
    day = diurnal(base_rps=2.0, peak_rps=40.0, peak_hour=14.0, second_peak_hour=10.5, noise=0)
    assert day.steps == 1440 and day.step_s == 60.0 and day.duration_s == 86400.0
    hour = (day.times + 30.0) / 3600.0
    rate = day.rates
    assert rate.max() == pytest.approx(40.0, rel=0.01)
    assert rate.min() == pytest.approx(2.0, rel=0.01)
    assert abs(hour[rate.argmax()] - 14.0) < 0.5
    assert hour[rate.argmin()] <= 6.0 and rate[hour < 5].max() < 2.5  # the trough: night
    at = lambda h: float(rate[int(h * 60)])  # noqa: E731
    assert at(3.0) < 4.0 and at(23.5) < 8.0
    assert at(10.5) > at(11.8) + 2 and at(11.8) + 5 < at(14.0)  # morning peak, lunch dip, peak
    assert at(10.5) > 20.0
    assert 0.25 < day.mean_rps / day.peak_rps < 0.6
    assert day.expected_requests == pytest.approx(rate.sum() * 60.0)
    assert float(np.asarray(day.sensitive_share)) == 0.3


def test_diurnal_noise_is_seeded_and_keeps_the_level() -> None:
    a = diurnal(noise=0.1, seed=1)
    b = diurnal(noise=0.1, seed=1)
    c = diurnal(noise=0.1, seed=2)
    flat = diurnal(noise=0.0)
    assert np.array_equal(a.rates, b.rates) and not np.array_equal(a.rates, c.rates)
    assert a.mean_rps == pytest.approx(flat.mean_rps, rel=0.02)
    assert (a.rates >= 0).all()


def test_diurnal_length_start_and_one_peak() -> None:
    half = diurnal(hours=6, step_s=300, start_hour=12, second_peak_hour=None, noise=0)
    assert half.steps == 72
    assert half.rates.argmax() == pytest.approx((14 - 12) * 12, abs=1)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"hours": 0}, "hours"),
        ({"base_rps": 5, "peak_rps": 2}, "peak_rps"),
        ({"peak_hour": 24}, "peak_hour"),
        ({"noise": -0.1}, "noise"),
        ({"second_peak_hour": 30}, "second_peak_hour"),
        ({"sensitive_share": 1.5}, "sensitive_share"),
    ],
)
def test_diurnal_names_a_bad_argument(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        diurnal(**kwargs)


def test_trace_checks_its_values() -> None:
    with pytest.raises(DataError, match="step 1 has rate -1"):
        Trace(60.0, np.array([1.0, -1.0]))
    with pytest.raises(DataError, match="step 0 has rate nan"):
        Trace(60.0, np.array([np.nan]))
    with pytest.raises(DataError, match="non-empty"):
        Trace(60.0, np.array([]))
    with pytest.raises(DataError, match="2 values for 3 steps"):
        Trace(60.0, np.ones(3), np.array([0.1, 0.2]))
    with pytest.raises(DataError, match="step_s"):
        Trace(0.0, np.ones(3))


def test_csv_reads_rates_and_shares_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "day.csv"
    path.write_text("time_s,rps,sensitive_share,note\n0,1.5,0.1,a\n30,2.5,0.2,b\n60,0,0.3,c\n")
    trace = read_trace(path)
    assert trace.step_s == 30.0 and trace.name == "day"
    assert trace.rates.tolist() == [1.5, 2.5, 0.0]
    assert trace.shares.tolist() == [0.1, 0.2, 0.3]
    plain = tmp_path / "plain.csv"
    plain.write_text("rps,time_s\n4,100\n5,160\n")  # any column order; no share: 0
    t2 = read_trace(plain)
    assert t2.rates.tolist() == [4.0, 5.0] and t2.step_s == 60.0
    assert float(np.asarray(t2.sensitive_share)) == 0.0
    day = diurnal(hours=2, noise=0.2)
    back = read_trace(write_trace(day, tmp_path / "out.csv"))
    assert np.array_equal(back.rates, day.rates) and back.step_s == day.step_s
    assert np.array_equal(back.shares, day.shares)


def test_jsonl_bins_requests_with_iso_and_epoch_times(tmp_path: Path) -> None:
    lines = [
        {"time": "2024-05-01T09:00:00Z", "sensitive": True},
        {"time": "2024-05-01T09:00:10.500+00:00"},
        {"time": 1714554019.0, "sensitive": False},  # 09:00:19, epoch seconds
        {"time": "2024-05-01T09:00:18", "sensitive": True},  # no zone: UTC; 1 s out of order
        {"time": "1714554041"},  # 09:00:41, a numeric string
    ]
    path = tmp_path / "requests.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    trace = read_trace(path, step_s=20.0)
    assert trace.step_s == 20.0 and trace.steps == 3
    assert trace.rates.tolist() == [4 / 20, 0.0, 1 / 20]
    assert trace.shares.tolist() == [0.5, 0.0, 0.0]
    default = read_trace(path)  # 60 s steps
    assert default.rates.tolist() == [5 / 60]
    path.write_text(json.dumps({"time": 0}) + "\n" + json.dumps({"time": 90}) + "\n")
    flat = read_trace(path)
    assert flat.rates.tolist() == [1 / 60, 1 / 60]
    assert float(np.asarray(flat.sensitive_share)) == 0.0


def test_format_is_sniffed_without_a_known_suffix(tmp_path: Path) -> None:
    log = tmp_path / "requests.txt"
    log.write_text('{"time": 0}\n{"time": 1}\n')
    assert read_trace(log).rates.tolist() == [2 / 60]
    table = tmp_path / "rates.txt"
    table.write_text("time_s,rps\n0,3\n")
    assert read_trace(table).rates.tolist() == [3.0]


CSV_CASES = [
    ("", "the file is empty", None),
    ("\n  \n", "the file is empty", None),
    ("time_s,rps\n", "no rows after the header", None),
    ("time_s,requests\n0,1\n", "column 'rps': missing column", None),
    ("rps\n1\n", "column 'time_s': missing column", None),
    ("time_s,rps\n0,1\n60,lots\n", "row 2, column 'rps': 'lots' is not a number", None),
    ("time_s,rps\n0,1\n60,nan\n", "row 2, column 'rps': NaN is not allowed", None),
    ("time_s,rps\n0,1\n60,inf\n", "row 2, column 'rps': inf is not finite", None),
    ("time_s,rps\n0,1\n60,-3\n", "row 2, column 'rps': rate -3.0 is negative", None),
    ("time_s,rps\n0,1\n60,2\n60,3\n", "row 3, column 'time_s': time 60 is not after", None),
    ("time_s,rps\n0,1\n60,2\n30,3\n", "row 3, column 'time_s': time 30 is not after", None),
    ("time_s,rps\n0,1\n60,2\n180,3\n", "row 3, column 'time_s': time 180 is 120 s", None),
    ("time_s,rps\n0,1\n60\n", "row 2, column 'rps': missing value", None),
    ("time_s,rps\n0,1\n,2\n", "row 2, column 'time_s': missing value", None),
    ("time_s,rps,sensitive_share\n0,1,1.2\n", "row 1, column 'sensitive_share'", None),
    ("time_s,rps\n0,1\n30,1\n", "the file's step is 30 s, not the 60 s", 60.0),
]


@pytest.mark.parametrize(("text", "message", "step"), CSV_CASES)
def test_malformed_csv_is_named(tmp_path: Path, text: str, message: str, step: float) -> None:
    path = tmp_path / "trace.csv"
    path.write_text(text)
    with pytest.raises(DataError) as caught:
        read_trace(path, step_s=step)
    assert message in str(caught.value)
    assert str(caught.value).startswith(str(path))


JSONL_CASES = [
    ('{"time": 0}\n{"time": 1\n', "line 2: not JSON"),
    ("[1, 2]\n", "line 1: expected a JSON object per request, got list"),
    ('{"time": 0}\n\n{"at": 5}\n', "column 'time': line 3: no 'time' field"),
    ('{"time": "yesterday"}\n', "column 'time': line 1: 'yesterday' is neither ISO-8601"),
    ('{"time": true}\n', "column 'time': line 1: True is neither"),
    ('{"time": NaN}\n', "column 'time': line 1: nan is neither"),
    ('{"time": 100}\n{"time": 105}\n{"time": 90}\n', "column 'time': line 3: time 90 is 15.000 s"),
    ('{"time": 0, "sensitive": "yes"}\n', "column 'sensitive': line 1: 'yes' is not true"),
]


@pytest.mark.parametrize(("text", "message"), JSONL_CASES)
def test_malformed_jsonl_is_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "requests.jsonl"
    path.write_text(text)
    with pytest.raises(DataError) as caught:
        read_trace(path)
    assert message in str(caught.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv: no such file"):
        read_trace(tmp_path / "nope.csv")
    with pytest.raises(ConfigError, match="step_s"):
        read_trace(tmp_path / "nope.csv", step_s=0)
