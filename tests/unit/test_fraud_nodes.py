"""Node files: labels and attributes from one file or two, encoding, missing values, leakage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from abyssal.core.errors import DataError
from abyssal.solutions.fraud.attributes import NodeAttributes
from abyssal.solutions.fraud.config import FraudDataConfig
from abyssal.solutions.fraud.dataset import prepare_fraud_data
from abyssal.solutions.fraud.nodes import NodeFileOptions, read_node_files

KNOWN = pd.Index(["a", "b", "c", "d"])


def write(tmp_path: Path, name: str, lines: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_one_file_gives_labels_and_attributes_under_either_key(tmp_path: Path) -> None:
    path = write(tmp_path, "nodes.csv", ["node,label,age,city", "a,1,30,x", "b,0,,y", "c,,50,x"])
    for labels, features in ((path, None), (None, path), (path, path)):
        table = read_node_files(labels, features, known=KNOWN)
        assert table.labels.to_dict("list") == {"node": ["a", "b"], "label": [1, 0]}
        assert table.attributes.columns.tolist() == ["node", "age", "city"]  # label never one
        age = table.attributes["age"].to_numpy()
        assert age[0] == 30.0 and np.isnan(age[1]) and age[2] == 50.0
        assert table.attributes["city"].tolist() == ["x", "y", "x"]
        assert list(table.files) == [str(path)]


def test_labels_and_attributes_from_two_files(tmp_path: Path) -> None:
    labels = write(tmp_path, "labels.csv", ["node,label", "a,1", "b,0"])
    features = write(tmp_path, "features.csv", ["node,label,score", "a,0,0.5", "d,1,0.1"])
    table = read_node_files(labels, features, known=KNOWN)
    assert table.labels["label"].tolist() == [1, 0]  # from the labels file
    assert table.attributes.columns.tolist() == ["node", "score"]
    assert table.notes == [f"{features}: column 'label' left out (labels come from {labels})"]
    assert set(table.files) == {str(labels), str(features)}


def test_named_columns_and_ignored_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "n.csv", ["account,fraud_flag,note,x", "a,1,hi,2", "b,0,yo,3"])
    options = NodeFileOptions("account", "fraud_flag", ("note",))
    table = read_node_files(path, None, known=KNOWN, options=options)
    assert table.labels["node"].tolist() == ["a", "b"]
    assert table.attributes.columns.tolist() == ["node", "x"]
    typo = NodeFileOptions("account", "fraud_flag", ("nope",))
    with pytest.raises(DataError, match=r"data\.ignore_columns names 'nope', which no node file"):
        read_node_files(path, None, known=KNOWN, options=typo)
    with pytest.raises(DataError, match="missing column 'label'"):
        read_node_files(path, None, known=KNOWN, options=NodeFileOptions("account"))


def test_bad_node_files_name_file_row_and_column(tmp_path: Path) -> None:
    bad_label = write(tmp_path, "l.csv", ["node,label", "a,1", "b,2"])
    with pytest.raises(DataError) as info:
        read_node_files(bad_label, None, known=KNOWN)
    assert str(info.value).startswith(f"{bad_label}, row 2, column 'label': expected 0 or 1")
    stranger = write(tmp_path, "s.csv", ["node,label", "a,1", "zz,0"])
    with pytest.raises(DataError, match="row 2, column 'node': node 'zz' is in no edge"):
        read_node_files(stranger, None, known=KNOWN)
    one = write(tmp_path, "one.csv", ["node,label,x", "a,1,1"])
    two = write(tmp_path, "two.csv", ["node,x", "b,2"])
    with pytest.raises(DataError, match="attribute column 'x' is in two node files"):
        read_node_files(one, two, known=KNOWN)


def test_encoding_numeric_onehot_and_frequency() -> None:
    frame = pd.DataFrame(
        {
            "age": [30.0, np.nan, 50.0, 10.0],
            "city": np.array(["x", "y", None, "x"], dtype=object),
            "ref": np.array(["r1", "r2", "r3", "r1"], dtype=object),
        }
    )
    attrs = NodeAttributes.fit(frame, max_onehot_values=2)
    assert attrs.names == [
        "given_age",
        "given_age_missing",
        "given_city=x",
        "given_city=y",
        "given_city_missing",
        "given_ref_frequency",
    ]
    np.testing.assert_allclose(
        attrs.matrix(),
        [
            [30, 0, 1, 0, 0, 0.5],
            [30, 1, 0, 1, 0, 0.25],  # median of 10, 30, 50
            [50, 0, 0, 0, 1, 0.25],
            [10, 0, 1, 0, 0, 0.5],
        ],
    )
    assert attrs.absent_row() == [30.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    assert "age (numeric, 1 missing)" in attrs.describe()
    assert "ref (frequency of 3 values, 0 missing)" in attrs.describe()


def _graph_files(tmp_path: Path, n: int = 60, frauds: int = 20) -> tuple[Path, pd.DataFrame]:
    """A ring of accounts with a few chords; ``frauds`` labelled fraudulent, the rest benign."""
    rng = np.random.default_rng(0)
    src = [f"n{i}" for i in range(n)] * 2
    dst = [f"n{(i + 1) % n}" for i in range(n)] + [f"n{rng.integers(n)}" for _ in range(n)]
    times = np.arange(2 * n) * 60 + 1_700_000_000
    edges = tmp_path / "edges.csv"
    pd.DataFrame({"source": src, "target": dst, "timestamp": times}).to_csv(edges, index=False)
    label = (np.arange(n) < frauds).astype(int)
    nodes = pd.DataFrame(
        {"node": [f"n{i}" for i in range(n)], "label": label, "age": rng.normal(40, 9, n)}
    )
    return edges, nodes


def test_fingerprint_covers_every_input_file(tmp_path: Path) -> None:
    edges, nodes = _graph_files(tmp_path)
    nodes[["node", "label"]].to_csv(tmp_path / "labels.csv", index=False)
    nodes.to_csv(tmp_path / "nodes.csv", index=False)
    base = {"source": "edges", "path": str(edges), "labels_path": str(tmp_path / "labels.csv")}
    plain = prepare_fraud_data(FraudDataConfig(**base))
    with_features = prepare_fraud_data(
        FraudDataConfig(**base, features_path=str(tmp_path / "nodes.csv"))
    )
    assert plain.fingerprint != with_features.fingerprint
    assert "given_age" in with_features.graph.feature_names
    assert "1 node attributes: age (numeric, 0 missing)" in with_features.description
    nodes.assign(age=nodes["age"] + 1).to_csv(tmp_path / "nodes.csv", index=False)
    changed = prepare_fraud_data(FraudDataConfig(**base, features_path=str(tmp_path / "nodes.csv")))
    assert changed.fingerprint != with_features.fingerprint


def test_label_copied_under_another_name_trips_the_guard(tmp_path: Path) -> None:
    edges, nodes = _graph_files(tmp_path)
    nodes.assign(is_fraud_copy=nodes["label"]).to_csv(tmp_path / "nodes.csv", index=False)
    base = {"source": "edges", "path": str(edges), "features_path": str(tmp_path / "nodes.csv")}
    with pytest.raises(DataError) as info:
        prepare_fraud_data(FraudDataConfig(**base))
    assert "leaky feature: 'is_fraud_copy' (AUROC 1.000)" in str(info.value)
    assert "age" not in str(info.value).split("separates")[0]
    allowed = prepare_fraud_data(FraudDataConfig(**base, allow_leaky_features=["is_fraud_copy"]))
    assert "leaky features allowed: is_fraud_copy (AUROC 1.000)" in allowed.description
    unchecked = prepare_fraud_data(FraudDataConfig(**base, leakage_check=False))
    assert "given_is_fraud_copy" in unchecked.graph.feature_names
