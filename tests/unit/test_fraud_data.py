"""Readers of the fraud solution's formats, generic table checks, fingerprints, synthetic data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from abyssal.core.errors import ConfigError, DataError
from abyssal.data.fingerprint import fingerprint_file, fingerprint_frame
from abyssal.data.tables import ColumnSpec, read_table, validate_columns, write_table
from abyssal.solutions.fraud.sample import FraudSampleConfig, split_stream, write_sample
from abyssal.solutions.fraud.schema import EdgeListData, read_edge_list, read_transactions
from abyssal.solutions.fraud.synthetic import generate_transactions

HEADER = "transaction_id,timestamp,user_id,device_id,counterparty_id,amount,label"
ROWS = [
    "t1,1767225600,u1,d1,m1,10.5,0",
    "t2,1767225700,u2,d2,u1,20,1",
    "t3,1767225650,u1,d1,m2,5,0",
]
TS_HELP = "expected Unix seconds or an ISO-8601 date-time such as 2026-01-31T12:00:00Z"


def write(tmp_path: Path, lines: list[str], name: str = "tx.csv") -> Path:
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines))
    return path


def with_cell(row: int, column: str, value: str) -> list[str]:
    """The sample table with one cell (1-based data row) replaced."""
    names = HEADER.split(",")
    rows = [r.split(",") for r in ROWS]
    rows[row - 1][names.index(column)] = value
    return [HEADER] + [",".join(r) for r in rows]


def error_of(path: Path, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        read_transactions(path, **kwargs)
    return info.value


# --- columns -------------------------------------------------------------------------------------


def test_missing_column_lists_found_and_suggests_close_match(tmp_path):
    path = write(tmp_path, ["txn_id,ts,uid,device_id,merchant_id,amount", "t1,1,u1,d1,m1,2"])
    err = error_of(path)
    assert str(err) == (
        f"{path}: missing column 'user_id' (found: txn_id, ts, uid, device_id, merchant_id, "
        "amount; did you mean 'uid'?); also accepted: user, customer_id, account_id"
    )
    assert err.path == str(path) and err.row is None


def test_aliases_are_accepted_and_renamed(tmp_path):
    path = write(tmp_path, ["tx_id,time,User,device,merchant_id,value", "t1,100,u1,d1,m1,2.5"])
    tx = read_transactions(path)
    assert list(tx.columns) == [
        "transaction_id",
        "timestamp",
        "user_id",
        "device_id",
        "counterparty_id",
        "amount",
    ]
    assert tx.iloc[0].tolist() == ["t1", 100, "u1", "d1", "m1", 2.5]


def test_label_required_when_asked(tmp_path):
    path = write(tmp_path, [HEADER.removesuffix(",label"), "t1,1,u1,d1,m1,2"])
    assert "label" not in read_transactions(path).columns
    assert "missing column 'label'" in str(error_of(path, require_label=True))


# --- values --------------------------------------------------------------------------------------


def test_unparseable_timestamp_names_row_column_and_value(tmp_path):
    err = error_of(write(tmp_path, with_cell(2, "timestamp", "yesterday")))
    assert str(err).endswith(
        f", row 2, column 'timestamp': cannot read timestamp 'yesterday': {TS_HELP}"
    )
    assert (err.row, err.column) == (2, "timestamp")


def test_timestamp_error_names_the_header_as_written(tmp_path):
    path = write(tmp_path, ["tx_id,ts,user_id,device_id,counterparty_id,amount", "t1,soon,u,d,m,1"])
    assert (
        str(error_of(path))
        == f"{path}, row 1, column 'ts': cannot read timestamp 'soon': {TS_HELP}"
    )


def test_iso_and_unix_timestamps_give_the_same_seconds(tmp_path):
    lines = [HEADER, *ROWS]
    lines[1] = lines[1].replace("1767225600", "2026-01-01T00:00:00Z")
    lines[2] = lines[2].replace("1767225700", "2026-01-01 01:01:40+01:00")
    lines[3] = lines[3].replace("1767225650", "1767225650.9")
    tx = read_transactions(write(tmp_path, lines))
    assert tx["timestamp"].dtype == np.int64
    assert tx.set_index("transaction_id")["timestamp"].to_dict() == {
        "t1": 1767225600,
        "t2": 1767225700,
        "t3": 1767225650,
    }


def test_millisecond_timestamps_are_refused(tmp_path):
    err = error_of(write(tmp_path, with_cell(1, "timestamp", "1767225600000")))
    assert "row 1, column 'timestamp': timestamp '1767225600000' is too large" in str(err)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "not a number: 'abc'"),
        ("nan", "not a finite number: 'nan'"),
        ("inf", "not a finite number: 'inf'"),
        ("", "missing value; expected a number"),
        ("-5", "amount must be >= 0, got -5.0"),
    ],
)
def test_bad_amount_names_row_and_column(tmp_path, value, message):
    path = write(tmp_path, with_cell(3, "amount", value))
    assert str(error_of(path)) == f"{path}, row 3, column 'amount': {message}"


def test_missing_id_names_row(tmp_path):
    path = write(tmp_path, with_cell(2, "device_id", ""))
    assert (
        str(error_of(path)) == f"{path}, row 2, column 'device_id': missing value; expected an id"
    )


def test_bad_label_names_row(tmp_path):
    path = write(tmp_path, with_cell(2, "label", "-1"))
    expected = f"{path}, row 2, column 'label': expected 0 or 1 (or true/false), got '-1'"
    assert str(error_of(path)) == expected


def test_true_false_labels_are_accepted(tmp_path):
    lines = [HEADER, *ROWS]
    lines[1] = lines[1][:-1] + "true"
    lines[3] = lines[3][:-1] + "False"
    tx = read_transactions(write(tmp_path, lines))
    assert tx["label"].dtype == np.int8 and tx["label"].tolist() == [1, 0, 1]


def test_duplicate_transaction_ids_name_both_rows(tmp_path):
    path = write(tmp_path, with_cell(3, "transaction_id", "t1"))
    expected = f"{path}, row 3, column 'transaction_id': duplicate value 't1' (first in row 1)"
    assert str(error_of(path)) == expected


def test_ids_keep_leading_zeros_and_rows_sort_by_time(tmp_path):
    path = write(tmp_path, with_cell(1, "user_id", "007"))
    tx = read_transactions(path)
    assert tx["transaction_id"].tolist() == ["t1", "t3", "t2"]
    assert tx["user_id"].tolist() == ["007", "u1", "u2"]
    assert tx.index.tolist() == [0, 1, 2]


# --- files ---------------------------------------------------------------------------------------


def test_empty_file_has_no_rows(tmp_path):
    path = write(tmp_path, [])
    assert str(error_of(path)) == f"{path}: no rows: the file is empty"


def test_header_only_file_has_no_rows(tmp_path):
    path = write(tmp_path, [HEADER])
    assert str(error_of(path)) == f"{path}: no rows: the table has a header but no data"


def test_unknown_suffix_lists_accepted_ones(tmp_path):
    path = tmp_path / "tx.xlsx"
    expected = f"{path}: unsupported file type; expected one of .csv, .csv.gz, .parquet, .pq"
    assert str(error_of(path)) == expected


def test_missing_file(tmp_path):
    path = tmp_path / "absent.csv"
    assert str(error_of(path)) == f"{path}: file not found"


def test_unreadable_csv_gives_the_parser_reason(tmp_path):
    path = write(tmp_path, ["a,b", "1,2", "3,4,5"])
    with pytest.raises(DataError, match=re.escape(f"{path}: cannot read as CSV: ") + ".*3") as info:
        read_table(path)
    assert "fields" in str(info.value)


def test_parquet_and_gzip_round_trip(tmp_path):
    original = read_transactions(write(tmp_path, [HEADER, *ROWS]))
    for name in ("tx.parquet", "tx.pq", "tx.csv.gz"):
        path = write_table(original, tmp_path / name)
        again = read_transactions(path)
        pd.testing.assert_frame_equal(again, original)
        assert fingerprint_frame(again) == fingerprint_frame(original)


def test_frame_input_uses_source_name_in_messages():
    frame = pd.DataFrame({"transaction_id": ["a"], "timestamp": [1], "user_id": ["u"]})
    with pytest.raises(DataError, match=r"^<dataframe>: missing column 'device_id'"):
        read_transactions(frame)
    with pytest.raises(DataError, match=r"^upload: no rows"):
        read_transactions(frame.iloc[:0], source_name="upload")


def test_validate_columns_skips_absent_optional_and_rejects_unknown_kind():
    specs = [ColumnSpec("n", "number"), ColumnSpec("extra", "id", required=False)]
    out = validate_columns(pd.DataFrame({"n": [1, 2], "other": ["x", "y"]}), specs, "f.csv")
    assert list(out.columns) == ["n"] and out["n"].dtype == np.float64
    with pytest.raises(ValueError, match="unknown kind 'date'"):
        ColumnSpec("x", "date")  # type: ignore[arg-type]


# --- edge lists ----------------------------------------------------------------------------------


def edge_files(tmp_path: Path) -> Path:
    return write(tmp_path, ["src,dst,timestamp", "a,b,10", "b,c,20", "c,a,30"], "edges.csv")


def test_edge_list_reads_with_default_weight(tmp_path):
    graph = read_edge_list(edge_files(tmp_path))
    assert graph.edges.columns.tolist() == ["source", "target", "timestamp", "weight"]
    assert graph.edges["weight"].tolist() == [1.0, 1.0, 1.0]
    assert graph.nodes().tolist() == ["a", "b", "c"]
    assert graph.labels is None and graph.features is None


def test_edge_list_labels_for_unknown_node(tmp_path):
    labels = write(tmp_path, ["node,label", "a,1", "zz,0"], "labels.csv")
    with pytest.raises(DataError) as info:
        read_edge_list(edge_files(tmp_path), labels)
    assert (
        str(info.value) == f"{labels}, row 2, column 'node': node 'zz' is in no edge of the graph"
    )


def test_graph_without_labels_cannot_be_required(tmp_path):
    edges = edge_files(tmp_path)
    with pytest.raises(DataError) as info:
        read_edge_list(edges).require_labels(edges)
    assert str(info.value) == (
        f"{edges}: the graph has no node labels to train or evaluate on; expected a node file "
        "with columns node,label (1 = fraudulent, 0 = benign) as data.labels_path (or "
        "data.features_path)"
    )
    labelled = EdgeListData(pd.DataFrame(), pd.DataFrame({"node": ["a"], "label": [1]}))
    assert labelled.require_labels().shape == (1, 2)


def test_edge_list_features_are_numbers_or_text(tmp_path):
    features = write(tmp_path, ["node,age,score", "a,3,0.5", "b,old,0.1"], "features.csv")
    graph = read_edge_list(edge_files(tmp_path), features_path=features)
    assert graph.features["age"].tolist() == ["3", "old"]  # text: a categorical attribute
    assert graph.features["score"].tolist() == [0.5, 0.1]
    infinite = write(tmp_path, ["node,score", "a,0.5", "b,inf"], "infinite.csv")
    with pytest.raises(DataError) as info:
        read_edge_list(edge_files(tmp_path), features_path=infinite)
    assert str(info.value) == f"{infinite}, row 2, column 'score': not a finite number: 'inf'"
    good = write(tmp_path, ["node,age", "a,3", "c,4"], "good.csv")
    graph = read_edge_list(edge_files(tmp_path), features_path=good)
    assert graph.features.to_dict("list") == {"node": ["a", "c"], "age": [3.0, 4.0]}


# --- fingerprints --------------------------------------------------------------------------------


def test_fingerprint_is_stable_and_sensitive(tmp_path):
    path = write(tmp_path, [HEADER, *ROWS])
    first = fingerprint_frame(read_transactions(path))
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", first)
    assert fingerprint_frame(read_transactions(path)) == first
    changed = write(tmp_path, with_cell(2, "amount", "20.01"), "changed.csv")
    assert fingerprint_frame(read_transactions(changed)) != first
    assert fingerprint_file(path) == fingerprint_file(path) != fingerprint_file(changed)
    assert fingerprint_file(path).startswith("sha256:")


# --- synthetic data ------------------------------------------------------------------------------

SMALL = dict(n_users=300, n_merchants=50, n_rings=3, days=20)


def test_synthetic_is_determined_by_seed():
    a, b = generate_transactions(seed=3, **SMALL), generate_transactions(seed=3, **SMALL)
    pd.testing.assert_frame_equal(a.transactions, b.transactions)
    assert a.rings == b.rings
    other = generate_transactions(seed=4, **SMALL)
    assert not other.transactions.equals(a.transactions)


@pytest.fixture(scope="module")
def defaults():
    return generate_transactions(seed=1)


def test_synthetic_defaults_have_a_realistic_fraud_rate(defaults):
    tx = defaults.transactions
    assert 40_000 <= len(tx) <= 60_000
    assert 0.01 <= tx["label"].mean() <= 0.04
    assert 0.02 <= defaults.user_labels["label"].mean() <= 0.05
    assert len(defaults.rings) == 12
    members = {u for ring in defaults.rings for u in ring.members}
    lone = set(tx.loc[tx["label"] == 1, "user_id"]) - members
    assert 5 <= len(lone) <= 15  # 0.5% of 2,000 users
    flagged = set(defaults.user_labels.loc[defaults.user_labels["label"] == 1, "user_id"])
    assert flagged == members | lone


def test_rings_share_devices_or_only_money_and_send_it_in_circles(defaults):
    tx = defaults.transactions
    assert {len(ring.devices) > 0 for ring in defaults.rings} == {True, False}
    for ring in defaults.rings:
        fraud = tx[tx["user_id"].isin(ring.members) & (tx["label"] == 1)]
        if ring.devices:
            assert set(fraud["device_id"]) <= set(ring.devices)
            assert fraud.groupby("device_id")["user_id"].nunique().max() >= 2
        transfers = fraud[fraud["counterparty_id"].isin(ring.members)]
        assert set(transfers["user_id"]) == set(ring.members)  # everyone passes money on
        assert set(transfers["counterparty_id"]) == set(ring.members)  # and receives it
        cash_out = fraud[fraud["counterparty_id"].str.startswith("M")]
        assert 1 <= cash_out["counterparty_id"].nunique() <= 2  # the ring's mule merchants
        honest = tx[tx["user_id"].isin(ring.members) & (tx["label"] == 0)]
        assert len(honest) > 0  # members also shop normally


def test_honest_users_share_devices_and_pass_money_round_too(defaults):
    """What gives fraud away is relational: alone, each pattern is common among honest users."""
    tx, labels = defaults.transactions, defaults.user_labels
    honest_tx = tx[tx["user_id"].isin(labels.loc[labels["label"] == 0, "user_id"])]
    users_per_device = honest_tx.groupby("device_id")["user_id"].nunique()
    assert (users_per_device >= 2).sum() >= 30  # households
    assert users_per_device.max() >= 10  # a shop's public kiosk
    pairs = honest_tx.loc[
        honest_tx["counterparty_id"].str.startswith("U"), ["user_id", "counterparty_id"]
    ]
    pairs = pairs.drop_duplicates().set_axis(["a", "b"], axis=1)
    paths = pairs.merge(pairs.rename(columns={"a": "b", "b": "c"}), on="b")
    triangles = paths.merge(pairs.rename(columns={"a": "c", "b": "a"}), on=["c", "a"])
    assert len(triangles) > 0  # friends settling up A -> B -> C -> A
    counts = tx.groupby("user_id").size()
    members = [u for ring in defaults.rings for u in ring.members]
    low, high = counts.drop(members).quantile([0.05, 0.95])
    assert low <= counts[members].median() <= high


def test_synthetic_passes_the_reader():
    tx = generate_transactions(seed=2, **SMALL).transactions
    pd.testing.assert_frame_equal(read_transactions(tx, require_label=True), tx)


def test_split_stream_cuts_at_a_time():
    tx = generate_transactions(seed=0, **SMALL).transactions
    history, new = split_stream(tx, new_frac=0.1)
    assert len(history) + len(new) == len(tx)
    assert history["timestamp"].max() < new["timestamp"].min()
    assert abs(len(new) - 0.1 * len(tx)) <= 5
    with pytest.raises(ConfigError, match="new_frac must be in"):
        split_stream(tx, new_frac=1.5)


def test_write_sample_writes_history_stream_and_planted_rings(tmp_path):
    options = FraudSampleConfig(users=400, merchants=80, rings=4, days=30, new_frac=0.05)
    lines = write_sample(options, tmp_path / "sample")
    assert [line.split(":")[0] for line in lines] == [
        "transactions.csv",
        "new_transactions.csv",
        "planted_rings.json",
    ]
    history = read_transactions(tmp_path / "sample" / "transactions.csv", require_label=True)
    new = read_transactions(tmp_path / "sample" / "new_transactions.csv")
    assert "label" not in new and history["timestamp"].max() < new["timestamp"].min()
    rings = json.loads((tmp_path / "sample" / "planted_rings.json").read_text())
    assert len(rings) == 4 and all(len(r["members"]) >= 3 for r in rings)


def test_synthetic_refuses_too_many_ring_members():
    with pytest.raises(ConfigError, match="need n_users >= 160, got 100"):
        generate_transactions(n_users=100, n_rings=10, ring_size=(3, 8))
