"""The drifting synthetic fraud stream: tactics by month, rings, devices, arguments and the CLI."""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from abyssal.cli.main import main
from abyssal.core.errors import ConfigError
from abyssal.solutions.fraud.drift import (
    DEFAULT_SCHEDULE,
    LONE_TACTIC,
    TACTICS,
    DriftingStream,
    default_schedule,
    generate_drifting_stream,
    ring_plan,
)
from abyssal.solutions.fraud.sample import FraudSampleConfig
from abyssal.solutions.fraud.synthetic import generate_transactions

SMALL = dict(n_users=800, n_merchants=100)  # 6 months x 4 rings of up to 8 fit into 400 users
EARLY, LATE = ("cycle", "collector"), ("fan_out", "slow_burn")


@pytest.fixture(scope="module")
def stream() -> DriftingStream:
    return generate_drifting_stream(seed=3, **SMALL)


def _ring_rows(stream: DriftingStream, ring) -> pd.DataFrame:
    tx = stream.transactions
    rows = tx["user_id"].isin(ring.members).to_numpy() & (stream.tactic == ring.tactic)
    return tx[rows]


def test_same_seed_same_stream_other_seed_other_stream():
    a = generate_drifting_stream(months=2, n_users=300, n_merchants=40, seed=5)
    b = generate_drifting_stream(months=2, n_users=300, n_merchants=40, seed=5)
    c = generate_drifting_stream(months=2, n_users=300, n_merchants=40, seed=6)
    pd.testing.assert_frame_equal(a.transactions, b.transactions)
    assert a.tactic.tolist() == b.tactic.tolist() and a.rings == b.rings
    assert not a.transactions["user_id"].equals(c.transactions["user_id"])


def test_columns_and_dtypes_match_generate_transactions(stream):
    plain = generate_transactions(n_users=100, n_rings=2, days=7).transactions
    tx = stream.transactions
    assert list(tx.columns) == list(plain.columns)
    assert tx.dtypes.to_dict() == plain.dtypes.to_dict()
    assert tx["timestamp"].is_monotonic_increasing
    assert tx["transaction_id"].tolist() == [f"T{i:07d}" for i in range(len(tx))]
    assert stream.tactic.shape == (len(tx),) and stream.tactic.dtype.kind == "U"


def test_tactic_marks_exactly_the_fraudulent_rows(stream):
    fraud = stream.transactions["label"].to_numpy() == 1
    assert ((stream.tactic != "") == fraud).all()
    assert set(stream.tactic[fraud]) == {*TACTICS, LONE_TACTIC}


def test_each_tactic_first_appears_in_its_scheduled_month(stream):
    counts = stream.fraud_counts()
    for tactic, first in DEFAULT_SCHEDULE.items():
        assert counts[tactic].iloc[:first].sum() == 0, tactic
        assert counts[tactic].iloc[first] > 0, tactic
        assert min(r.month for r in stream.rings if r.tactic == tactic) == first


def test_the_default_schedule_spreads_over_the_months():
    assert (
        default_schedule(6)
        == dict(DEFAULT_SCHEDULE)
        == {
            "cycle": 0,
            "collector": 0,
            "fan_out": 2,
            "slow_burn": 4,
        }
    )
    assert default_schedule(2) == {"cycle": 0, "collector": 0, "fan_out": 1, "slow_burn": 1}
    assert default_schedule(12)["fan_out"] == 4 and default_schedule(12)["slow_burn"] == 8


def test_custom_schedule_is_followed():
    s = generate_drifting_stream(
        months=3, n_users=400, n_merchants=40, schedule={"slow_burn": 0, "cycle": 2}, seed=2
    )
    assert min(r.month for r in s.rings if r.tactic == "cycle") == 2
    assert {r.tactic for r in s.rings if r.month < 2} == {"slow_burn"}


def test_the_default_mix_moves_to_the_newest_tactic():
    by_month = [
        Counter(t for m, t in ring_plan(DEFAULT_SCHEDULE, 6, 4) if m == k) for k in range(6)
    ]
    assert by_month[0] == by_month[1] == {"cycle": 3, "collector": 1}
    assert by_month[2] == by_month[3] == {"fan_out": 3, "cycle": 1}
    assert by_month[4] == by_month[5] == {"slow_burn": 2, "fan_out": 1, "cycle": 1}
    early = [sum(c[t] for t in EARLY) for c in by_month]
    assert early == [4, 4, 1, 1, 1, 1]  # old tactics fade


def test_new_rings_every_month_members_never_reused(stream):
    assert Counter(r.month for r in stream.rings) == {m: 4 for m in range(6)}
    members = [u for r in stream.rings for u in r.members]
    assert len(members) == len(set(members))
    lone = stream.transactions["user_id"][stream.tactic == LONE_TACTIC]
    assert not set(lone) & set(members)


def test_each_ring_acts_only_in_its_month(stream):
    for ring in stream.rings:
        rows = _ring_rows(stream, ring)
        assert len(rows) > 0, ring.ring_id
        assert set(stream.month_of(rows["timestamp"].to_numpy())) == {ring.month}


def test_fraud_share_per_month_is_sane(stream):
    month, label = stream.month_of(), stream.transactions["label"].to_numpy()
    shares = np.array([label[month == m].mean() for m in range(stream.months)])
    assert ((shares > 0.003) & (shares < 0.05)).all(), shares


def test_early_tactics_share_devices_later_ones_do_not(stream):
    tx = stream.transactions
    users_per_device = tx.groupby("device_id")["user_id"].nunique()
    for ring in stream.rings:
        rows = _ring_rows(stream, ring)
        per_device = rows.groupby("device_id")["user_id"].nunique()
        if ring.tactic in EARLY:
            assert ring.devices and set(rows["device_id"]) <= set(ring.devices)
            assert per_device.max() >= 2, ring.ring_id
        else:  # every device it uses is used by one account in the whole stream
            assert ring.devices == ()
            assert (users_per_device[per_device.index] == 1).all(), ring.ring_id


def test_later_tactics_never_cash_out_at_mule_merchants(stream):
    mules = {m for r in stream.rings if r.tactic in EARLY for m in r.merchants}
    for ring in stream.rings:
        paid = {c for c in _ring_rows(stream, ring)["counterparty_id"] if c.startswith("M")}
        assert paid and paid <= set(ring.merchants), ring.ring_id
        assert paid <= mules if ring.tactic in EARLY else paid.isdisjoint(mules), ring.ring_id


def test_month_bounds_and_month_of(stream):
    first, end = stream.month_bounds(0)
    assert (first, end) == (stream.start, stream.start + 30 * 86_400)
    assert stream.month_bounds(5)[1] == stream.start + 180 * 86_400
    assert stream.month_of(np.array([first, end - 1, end])).tolist() == [0, 0, 1]
    assert stream.month_of().min() == 0 and stream.month_of().max() == 5
    with pytest.raises(ConfigError, match=r"month must be in \[0, 6\), got 6"):
        stream.month_bounds(6)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"months": 1}, "months must be >= 2"),
        ({"n_users": 100}, "n_users: 6 months of 4 rings .* n_users >= 384; got 100"),
        ({"n_merchants": 5}, "n_merchants must be >= 10, got 5"),
        ({"rings_per_month": 0}, "rings_per_month must be >= 2"),
        ({"rings_per_month": 1}, "rings_per_month must be >= 2 .month 0 of the schedule starts 2"),
        ({"schedule": {"cycle": 0, "phishing": 1}}, "schedule: unknown tactic 'phishing'"),
        ({"schedule": {"cycle": 0, "fan_out": 6}}, "schedule: 'fan_out' starts in month 6"),
        ({"schedule": {"fan_out": 1}}, "schedule: no tactic starts in month 0"),
        ({"schedule": {"cycle": 0.5}}, "schedule: month of 'cycle' must be an integer"),
        ({"schedule": {}}, "schedule must be a non-empty mapping"),
        ({"lone_fraud_frac": 0.5}, r"lone_fraud_frac must be in \[0, 0.2\), got 0.5"),
        ({"start": "not a date"}, "start must be an ISO date"),
    ],
)
def test_bad_arguments_raise_config_error_naming_them(changes, message):
    with pytest.raises(ConfigError, match=message):
        generate_drifting_stream(**{**SMALL, **changes})


def test_generate_cli_writes_the_stream_and_its_tactics(tmp_path, capsys):
    out = tmp_path / "drift"
    args = ["users=400", "merchants=60", "drift_months=2", "drift_rings=3", "seed=1"]
    assert main(["generate", "fraud", "--out", str(out), *args]) == 0
    assert "tactics.csv: tactic and month" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        "planted_rings.json",
        "tactics.csv",
        "transactions.csv",
    ]
    expected = generate_drifting_stream(
        months=2, n_users=400, n_merchants=60, rings_per_month=3, seed=1
    )
    tx = pd.read_csv(out / "transactions.csv", dtype=str, keep_default_na=False)
    tactics = pd.read_csv(out / "tactics.csv", dtype=str, keep_default_na=False)
    assert list(tactics.columns) == ["transaction_id", "tactic", "month"]
    assert tactics["transaction_id"].tolist() == tx["transaction_id"].tolist()
    assert tx["label"].astype(int).tolist() == expected.transactions["label"].tolist()
    assert tactics["tactic"].tolist() == expected.tactic.tolist()
    assert tactics["month"].astype(int).tolist() == expected.month_of().tolist()
    rings = json.loads((out / "planted_rings.json").read_text())
    assert [(r["month"], r["tactic"]) for r in rings] == [
        (r.month, r.tactic) for r in expected.rings
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["drift_months=1"], r"drift_months must be 0 \(no drift\) or >= 2, got 1"),
        (["drift_months=-2"], r"drift_months must be 0 \(no drift\) or >= 2, got -2"),
        (["drift_months=2", "drift_rings=0"], "drift_rings must be >= 1, got 0"),
        (["drift_months=2", "segments=true"], "drift_months and segments=true cannot"),
        (["drift_months=6", "users=300"], "users=300, .*n_users >= 384; got 300"),
    ],
)
def test_generate_cli_refuses_bad_drift_values(tmp_path, capsys, args, message):
    out = tmp_path / "bad"
    assert main(["generate", "fraud", "--out", str(out), *args]) == 1
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


def test_no_drift_keeps_the_plain_sample(tmp_path):
    assert FraudSampleConfig().drift_months == 0
    assert (
        main(["generate", "fraud", "--out", str(tmp_path), "users=150", "rings=3", "days=5"]) == 0
    )
    assert not (tmp_path / "tactics.csv").exists()
    assert (tmp_path / "new_transactions.csv").exists()
