"""Bitcoin-OTC loader: the real data (marked ``data``) and download/resolution on tiny files."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from abyssal.core.errors import DataError
from abyssal.solutions.fraud import bitcoin_otc
from abyssal.solutions.fraud.bitcoin_otc import (
    ENV_VAR,
    download_bitcoin_otc,
    load_bitcoin_otc,
    load_split,
)

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "bitcoin_otc"

NETWORK = "1,2,4,1289241911.72836\n2,3,-10,1289241941.5\n3,1,1,1289243140\n4,1,2,1289243200\n"
TRUTH = "1,-1\n4,+1\n"
MASKS = (
    "node,train_mask,val_mask,test_mask,label,is_anchor\n"
    "1,1,0,0,1,1\n2,0,1,0,0,0\n3,0,0,1,0,0\n4,1,0,0,0,1\n"
)


@pytest.mark.data
def test_real_bitcoin_otc_counts():
    if not SHARED.is_dir():
        pytest.skip(f"no dataset at {SHARED}")
    otc = load_bitcoin_otc(SHARED)
    assert len(otc.edges) == 35_592
    assert len(otc.nodes()) == 5_881
    assert int(otc.labels["label"].sum()) == 180 and len(otc.labels) == 316
    assert otc.edges["rating"].between(-10, 10).all()
    split = load_split(SHARED, 0)
    assert (int(split.train.sum()), int(split.val.sum()), int(split.test.sum())) == (
        3736,
        1078,
        1067,
    )
    assert int(split.labels.sum()) == 180 and set(split.nodes) == set(otc.nodes())


def make_source(tmp_path: Path, *, old_truth_path: bool = True) -> tuple[str, str]:
    """A SNAP-like gzipped edge list and a TGBase-like tree, as file:// URLs."""
    snap = tmp_path / "snap" / "soc-sign-bitcoinotc.csv.gz"
    snap.parent.mkdir()
    snap.write_bytes(gzip.compress(NETWORK.encode()))
    repo = tmp_path / "tgbase"
    truth = repo / ("data/otc_gt.csv" if old_truth_path else "data/otc/otc_gt.csv")
    truth.parent.mkdir(parents=True)
    truth.write_text(TRUTH)
    (repo / "data/otc/masks").mkdir(parents=True)
    for k in range(10):
        (repo / f"data/otc/masks/masks_{k}.csv").write_text(MASKS)
    return snap.as_uri(), repo.as_uri()


def test_download_from_file_urls_then_load(tmp_path):
    snap_url, base = make_source(tmp_path)
    dest = download_bitcoin_otc(tmp_path / "otc", snap_url=snap_url, tgbase_base=base)
    assert (dest / "otc_network.csv").read_text() == NETWORK
    assert sorted(p.name for p in (dest / "masks").iterdir()) == [
        f"masks_{k}.csv" for k in range(10)
    ]
    otc = load_bitcoin_otc(dest)
    assert otc.edges["source"].tolist() == ["1", "2", "3", "4"]
    assert otc.edges["timestamp"].tolist() == [1289241911, 1289241941, 1289243140, 1289243200]
    assert otc.labels.to_dict("list") == {"node": ["1", "4"], "label": [1, 0]}
    split = load_split(dest, 9)
    assert split.nodes.tolist() == ["1", "2", "3", "4"]
    assert split.train.tolist() == [True, False, False, True]
    assert split.labels.tolist() == [1, 0, 0, 0]


def test_failed_download_names_urls_and_leaves_nothing(tmp_path):
    snap_url, base = make_source(tmp_path)
    (tmp_path / "tgbase/data/otc/masks/masks_7.csv").unlink()
    dest = tmp_path / "otc"
    with pytest.raises(DataError) as info:
        download_bitcoin_otc(dest, snap_url=snap_url, tgbase_base=base)
    message = str(info.value)
    assert message.startswith(f"could not download any of {base}/data/otc/masks/masks_7.csv, ")
    assert f"{base}/data/masks/masks_7.csv" in message
    assert not dest.exists() or not any(dest.rglob("*"))


def test_download_refuses_other_schemes(tmp_path):
    with pytest.raises(DataError, match="expected an https://, http:// or file:// URL"):
        download_bitcoin_otc(tmp_path, snap_url="ftp://example.org/x.csv.gz")


def test_missing_folder_says_where_to_get_the_data(tmp_path):
    missing = tmp_path / "absent"
    with pytest.raises(DataError) as info:
        load_bitcoin_otc(missing)
    message = str(info.value)
    assert message.startswith(f"{missing}: Bitcoin-OTC data folder not found (the folder given")
    assert bitcoin_otc.SOURCE.snap_page in message
    assert "https://github.com/fpour/TGBase" in message
    assert "download_bitcoin_otc" in message and ENV_VAR in message


def test_root_from_environment_then_default(tmp_path, monkeypatch):
    snap_url, base = make_source(tmp_path, old_truth_path=False)
    dest = download_bitcoin_otc(tmp_path / "otc", snap_url=snap_url, tgbase_base=base)
    monkeypatch.setenv(ENV_VAR, str(dest))
    assert load_bitcoin_otc().root == dest
    monkeypatch.delenv(ENV_VAR)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"the default, relative to the current folder"):
        load_bitcoin_otc()


def test_bad_split_number_and_bad_ground_truth(tmp_path):
    snap_url, base = make_source(tmp_path)
    dest = download_bitcoin_otc(tmp_path / "otc", snap_url=snap_url, tgbase_base=base)
    with pytest.raises(DataError, match=r"^split 10 does not exist; choose one of 0\.\.9$"):
        load_split(dest, 10)
    (dest / "otc_gt.csv").write_text("1,-1\n4,0\n")
    with pytest.raises(DataError) as info:
        load_bitcoin_otc(dest)
    expected = (
        f"{dest / 'otc_gt.csv'}, row 2, column 'label': "
        "expected -1 (fraudulent) or +1 (benign), got 0.0"
    )
    assert str(info.value) == expected
