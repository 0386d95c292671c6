"""Every fraud training format trains and then scores through the CLI (batch) and the predictor
(live): transactions, edges with timestamps, edges without, edges with a node file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from abyssal.cli.main import main
from abyssal.core.errors import DataError
from abyssal.core.store import ModelStore
from abyssal.solutions.loading import load_model

TRAIN = [
    "train.epochs=2",
    "train.progress=false",
    "model.hidden=16",
    "model.heads=2",
    "baselines=false",
]
NEW = 12


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """80 accounts, 24 fraudulent ones paying each other; their edges, node files, new edges."""
    out = tmp_path_factory.mktemp("graph")
    rng = np.random.default_rng(0)
    n, frauds = 80, 24
    src = np.repeat(np.arange(n), 3)
    dst = np.where(src < frauds, rng.integers(0, frauds, len(src)), rng.integers(0, n, len(src)))
    keep = src != dst
    names = np.array([f"acct{i:02d}" for i in range(n)])
    edges = pd.DataFrame(
        {
            "source": names[src[keep]],
            "target": names[dst[keep]],
            "timestamp": 1_767_225_600 + np.arange(int(keep.sum())) * 600,
            "weight": rng.integers(1, 20, int(keep.sum())),
        }
    )
    edges.iloc[:-NEW].to_csv(out / "edges.csv", index=False)
    edges.iloc[-NEW:].to_csv(out / "new_edges.csv", index=False)
    edges.iloc[:-NEW].drop(columns="timestamp").to_csv(out / "static.csv", index=False)
    edges.iloc[-NEW:].drop(columns="timestamp").to_csv(out / "new_static.csv", index=False)
    label = (np.arange(n) < frauds).astype(int)
    age = rng.normal(40, 10, n).round()
    age[::7] = np.nan
    nodes = pd.DataFrame({"node": names, "label": label, "age": age})
    nodes["city"] = rng.choice(["oslo", "rome", "lima"], n)
    nodes.to_csv(out / "nodes.csv", index=False)
    nodes[["node", "label"]].to_csv(out / "labels.csv", index=False)
    nodes.assign(is_fraud_copy=label).to_csv(out / "leaky.csv", index=False)
    return out


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample")
    assert main(["generate", "fraud", "--out", str(out), "users=150", "rings=3", "days=10"]) == 0
    return out


FORMATS = {
    "transactions": (
        ["data.source=transactions", "data.path={s}/transactions.csv"],
        "new_transactions.csv",
    ),
    "edges": (["data.path={g}/edges.csv", "data.labels_path={g}/labels.csv"], "new_edges.csv"),
    "static": (["data.path={g}/static.csv", "data.labels_path={g}/labels.csv"], "new_static.csv"),
    "node file": (["data.path={g}/edges.csv", "data.features_path={g}/nodes.csv"], "new_edges.csv"),
}


@pytest.mark.parametrize("name", list(FORMATS))
def test_each_format_trains_then_scores_a_file(graph, sample, tmp_path, capsys, name) -> None:
    options, new = FORMATS[name]
    folder = sample if name == "transactions" else graph
    source = [] if name == "transactions" else ["data.source=edges"]
    args = [o.format(g=graph, s=sample) for o in options]
    assert main(["train", "fraud", *source, *args, *TRAIN]) == 0
    out = tmp_path / "scores.csv"
    assert main(["predict", "fraud", "--input", str(folder / new), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = len(pd.read_csv(folder / new))
    noun = "transactions" if name == "transactions" else "edges"
    assert f"fraud:1: scored {rows} new {noun}" in printed
    scores = pd.read_csv(out)
    assert len(scores) == rows and scores["risk"].between(0, 1).all()
    spec = ModelStore().resolve("fraud:1").config["model_spec"]
    assert spec["static"] is (name == "static")
    assert ("given_age" in spec["feature_names"]) is (name == "node file")


@pytest.mark.parametrize("name", ["edges", "static", "node file"])
def test_predictor_scores_edge_requests(graph, name) -> None:
    options, new = FORMATS[name]
    args = [o.format(g=graph) for o in options]
    assert main(["train", "fraud", "data.source=edges", *args, *TRAIN]) == 0
    loaded = load_model("fraud:1")
    predictor = loaded.solution.predictor(loaded)
    rows = pd.read_csv(graph / new, dtype=str).head(3).to_dict("records")
    responses = predictor.predict([predictor.parse(row) for row in rows])
    assert [(r["source"], r["target"]) for r in responses] == [
        (r["source"], r["target"]) for r in rows
    ]
    assert all(0 <= r["risk"] <= 1 and isinstance(r["flagged"], bool) for r in responses)
    with pytest.raises(DataError, match="request, row 1, column 'target': unknown account 'zz'"):
        predictor.parse({**rows[0], "target": "zz"})


def test_unknown_accounts_in_new_edges(graph, tmp_path, capsys) -> None:
    assert main(["train", "fraud", "data.source=edges", f"data.path={graph}/edges.csv",
                 f"data.labels_path={graph}/labels.csv", *TRAIN]) == 0  # fmt: skip
    new = pd.read_csv(graph / "new_edges.csv")
    new.loc[2, "source"] = "newcomer"
    path = tmp_path / "new.csv"
    new.to_csv(path, index=False)
    assert main(["predict", "fraud", "--input", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}, row 3, column 'source': unknown account 'newcomer'" in err
    assert "set live.on_unknown_account=add" in err
    assert main(["predict", "fraud", "--input", str(path), "live.on_unknown_account=add"]) == 0
    early = new.assign(timestamp=new["timestamp"].where(new.index != 4, 1_000_000_000))
    early.to_csv(path, index=False)
    assert main(["predict", "fraud", "--input", str(path), "live.on_unknown_account=add"]) == 1
    assert f"{path}, row 5, column 'timestamp': dated 2001-09-09" in capsys.readouterr().err


def test_leaky_node_file_stops_training_unless_allowed(graph, capsys) -> None:
    args = ["train", "fraud", "data.source=edges", f"data.path={graph}/edges.csv"]
    args += [f"data.features_path={graph}/leaky.csv", *TRAIN]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "leaky feature: 'is_fraud_copy' (AUROC 1.000)" in err
    assert ModelStore().names() == []
    assert main([*args, "data.allow_leaky_features=[is_fraud_copy]"]) == 0
    assert (
        "given_is_fraud_copy"
        in ModelStore().resolve("fraud:1").config["model_spec"]["feature_names"]
    )


def test_evaluate_refuses_changed_architecture_and_reports_positives(graph, capsys, caplog):
    assert main(["train", "fraud", "data.source=edges", f"data.path={graph}/edges.csv",
                 f"data.features_path={graph}/nodes.csv", *TRAIN]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["evaluate", "fraud:1", "model.hidden=8"]) == 1
    assert "model.hidden=8 does not match the stored model" in capsys.readouterr().err
    assert main(["evaluate", "fraud:1", "data.windows=[60]"]) == 1
    assert "data.windows=[60] does not match the stored model" in capsys.readouterr().err
    assert main(["evaluate", "fraud:1", "data.split_seed=-1"]) == 1
    assert "data.split_seed must be >= 0, got -1" in capsys.readouterr().err
    assert main(["evaluate", "fraud:1", "data.ignore_columns=[city]"]) == 1
    assert "the data gives 41 node features, the model was trained on 44" in (
        capsys.readouterr().err
    )
    new = ["--input", str(graph / "new_edges.csv")]
    assert main(["predict", "fraud", *new, "data.ignore_columns=[city]"]) == 1
    assert (
        "fraud:1 was trained on 44 node features, but its history graph now gives 41 "
        "(missing: given_city=lima, given_city=oslo, given_city=rome; new: -)"
        in (capsys.readouterr().err)
    )
    caplog.clear()
    assert main(["evaluate", "fraud:1", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert metrics["val_positives"] == 5 and metrics["test_positives"] == 5  # 24 * 0.2
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert (
        f"{graph}/edges.csv: the test split has only 5 positive (fraudulent) examples, "
        "fewer than 30" in "\n".join(warned)
    )


def test_evaluate_without_labels_says_so(graph, tmp_path, capsys) -> None:
    assert main(["train", "fraud", "data.source=edges", f"data.path={graph}/edges.csv",
                 f"data.features_path={graph}/nodes.csv", *TRAIN]) == 0  # fmt: skip
    unlabelled = tmp_path / "nodes.csv"
    pd.read_csv(graph / "nodes.csv").drop(columns="label").to_csv(unlabelled, index=False)
    assert main(["evaluate", "fraud:1", f"data.features_path={unlabelled}"]) == 1
    err = capsys.readouterr().err
    assert "no node labels to train or evaluate on" in err and "nothing to train" not in err
