"""Bad tables that used to slip through, or fail with a traceback: each is a clear DataError."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from abyssal.core.errors import DataError
from abyssal.data.tables import read_table
from abyssal.solutions.fraud.schema import read_transactions

HEADER = "transaction_id,timestamp,user_id,device_id,counterparty_id,amount,label"
ROWS = ["t1,1767225600,u1,d1,m1,10.5,0", "t2,1767225700,u2,d2,u1,20,1"]


def write(tmp_path: Path, lines: list[str], name: str = "tx.csv") -> Path:
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines))
    return path


def error_of(path: Path) -> str:
    with pytest.raises(DataError) as info:
        read_transactions(path)
    return str(info.value)


def test_a_duplicated_header_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, [HEADER + ",amount", *(r + ",99" for r in ROWS)])
    assert error_of(path) == (
        f"{path}, column 'amount': the header names column 'amount' twice; expected each "
        "column once"
    )


def test_nul_bytes_in_ids_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "tx.csv"
    path.write_bytes(f"{HEADER}\n{ROWS[0]}\nt2,1767225700,u\x002,d2,u1,20,1\n".encode())
    assert error_of(path) == (
        f"{path}, row 2, column 'user_id': id 'u\\x002' contains a NUL byte; expected "
        "printable text"
    )


@pytest.mark.parametrize(("sep", "name"), [(";", "';'"), ("\t", "tab"), ("|", "'|'")])
def test_other_separators_are_named_not_a_missing_column(tmp_path, sep, name) -> None:
    lines = [line.replace(",", sep) for line in (HEADER, *ROWS)]
    message = error_of(write(tmp_path, lines))
    assert f"the file looks {name}-separated" in message
    assert "missing column" not in message


@pytest.mark.parametrize("name", ["tx.csv", "tx.csv.gz"])
def test_crlf_and_byte_order_mark_read_like_plain_csv(tmp_path, name) -> None:
    plain = read_transactions(write(tmp_path, [HEADER, *ROWS], "plain.csv"))
    body = ("\ufeff" + "\r\n".join([HEADER, *ROWS]) + "\r\n").encode("utf-8")
    path = tmp_path / name
    path.write_bytes(gzip.compress(body) if name.endswith(".gz") else body)
    assert read_table(path).columns[0] == "transaction_id"
    pd.testing.assert_frame_equal(read_transactions(path), plain)
    plain.to_parquet(tmp_path / "tx.parquet")
    pd.testing.assert_frame_equal(read_transactions(tmp_path / "tx.parquet"), plain)


@pytest.mark.parametrize("when", ["2999-01-01T00:00:00Z", "1500-06-01", "2262-04-12T00:00:00"])
def test_iso_dates_outside_the_supported_range(tmp_path, when) -> None:
    path = write(tmp_path, [HEADER, ROWS[0], ROWS[1].replace("1767225700", when)])
    assert error_of(path) == (
        f"{path}, row 2, column 'timestamp': timestamp '{when}' is outside 1677-09-21 00:12:44 "
        "to 2262-04-11 23:47:16 UTC"
    )


def test_unix_seconds_beyond_2262_suggest_milliseconds(tmp_path: Path) -> None:
    far = write(tmp_path, [HEADER, ROWS[0], ROWS[1].replace("1767225700", "10000000000")])
    message = error_of(far)
    assert message.startswith(f"{far}, row 2, column 'timestamp': timestamp '10000000000'")
    assert "after the year 2262" in message and "milliseconds" in message
    near = write(tmp_path, [HEADER, ROWS[0], ROWS[1].replace("1767225700", "9000000000")], "n.csv")
    assert read_transactions(near)["timestamp"].max() == 9_000_000_000  # year 2255: fine
