"""The fraud solution end to end through the CLI, on small synthetic data, and its bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from abyssal.cli.main import main
from abyssal.core.errors import DataError
from abyssal.core.runs import list_runs
from abyssal.core.store import ModelStore

TRAIN = ["train.epochs=3", "train.progress=false", "model.hidden=16", "model.heads=2"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    assert (
        main(
            [
                "generate",
                "fraud",
                "--out",
                str(out),
                "users=150",
                "rings=3",
                "days=15",
                "new_frac=0.03",
            ]
        )
        == 0
    )
    return out


def _train(demo: Path, *extra: str) -> int:
    args = ["train", "fraud", "data.source=transactions", f"data.path={demo / 'transactions.csv'}"]
    return main([*args, *TRAIN, *extra])


def test_generate_writes_history_new_and_rings(demo: Path) -> None:
    history = pd.read_csv(demo / "transactions.csv")
    new = pd.read_csv(demo / "new_transactions.csv")
    assert "label" in history.columns and "label" not in new.columns
    assert history["timestamp"].max() < new["timestamp"].min()
    assert len(json.loads((demo / "planted_rings.json").read_text())) == 3


def test_train_evaluate_alias_predict(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _train(demo, "--alias", "candidate") == 0
    out = capsys.readouterr().out
    assert "registered fraud:1" in out and "gbdt_graph" in out and "AUPRC" in out
    store = ModelStore()
    mv = store.resolve("fraud:candidate")
    assert mv.version == 1 and 0.0 <= mv.metrics["test_auprc"] <= 1.0
    assert mv.lineage["data_fingerprint"].startswith("sha256:")
    assert main(["evaluate", "fraud:candidate", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["metrics"]["test_auprc"] == pytest.approx(mv.metrics["test_auprc"], abs=1e-6)
    assert main(["models", "alias", "fraud:1", "production"]) == 0
    scores = demo / "scores.csv"
    assert (
        main(
            [
                "predict",
                "fraud",
                "--input",
                str(demo / "new_transactions.csv"),
                "--out",
                str(scores),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "fraud:1: scored" in out and "p99" in out and "suspected rings" in out
    table = pd.read_csv(scores)
    new = pd.read_csv(demo / "new_transactions.csv")
    assert table["transaction_id"].tolist() == new["transaction_id"].tolist()
    assert table["risk"].between(0, 1).all()


def test_models_list_show_compare(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _train(demo) == 0
    assert _train(demo, "train.seed=1") == 0
    capsys.readouterr()
    assert main(["models", "list"]) == 0
    listing = capsys.readouterr().out
    assert "fraud:1" in listing and "fraud:2" in listing
    assert main(["models", "show", "fraud:2"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["config"]["solution_config"]["train"]["seed"] == 1
    assert main(["models", "compare", "fraud:1", "fraud:2"]) == 0
    assert "train.seed: 0 -> 1" in capsys.readouterr().out


def test_unknown_config_key_lists_valid_keys(
    demo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _train(demo, "train.epoch=3") == 1
    err = capsys.readouterr().err
    assert "unknown key 'train.epoch'" in err and "epochs" in err
    assert list_runs() == []


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda df: df.drop(columns=["amount"]), "missing column 'amount'"),
        (lambda df: df.rename(columns={"user_id": "usr"}), "did you mean 'usr'"),
        (
            lambda df: df.assign(timestamp=["yesterday", *df["timestamp"].tolist()[1:]]),
            "row 1, column 'timestamp'",
        ),
        (
            lambda df: df.assign(amount=df["amount"].astype(object).where(df.index != 2, "ten")),
            "row 3, column 'amount'",
        ),
        (
            lambda df: df.assign(amount=df["amount"].where(df.index != 1, float("nan"))),
            "row 2, column 'amount'",
        ),
        (
            lambda df: df.assign(transaction_id=["dup", "dup", *df["transaction_id"].tolist()[2:]]),
            "duplicate",
        ),
        (lambda df: df.iloc[0:0], "no rows"),
        (lambda df: df.drop(columns=["label"]), "no labels to train or evaluate on"),
        (
            lambda df: df.assign(
                timestamp=df["timestamp"].astype(object).where(df.index != 1, "2999-01-01")
            ),
            "row 2, column 'timestamp': timestamp '2999-01-01' is outside 1677-09-21",
        ),
        (
            lambda df: df.assign(timestamp=df["timestamp"].where(df.index != 0, 10**11)),
            "row 1, column 'timestamp': timestamp '100000000000' is too large for Unix seconds",
        ),
        (lambda df: pd.concat([df, df[["amount"]]], axis=1), "names column 'amount' twice"),
        (
            lambda df: df.assign(user_id=df["user_id"].where(df.index != 2, "U\x0007")),
            "row 3, column 'user_id': id 'U\\x0007' contains a NUL byte",
        ),
    ],
)
def test_bad_training_input_fails_cleanly(demo, tmp_path, capsys, mutate, message) -> None:
    bad = tmp_path / "bad.csv"
    mutate(pd.read_csv(demo / "transactions.csv")).to_csv(bad, index=False)
    code = main(["train", "fraud", "data.source=transactions", f"data.path={bad}", *TRAIN])
    err = capsys.readouterr().err
    assert code == 1
    assert message in err and str(bad) in err
    assert list_runs() == [] and ModelStore().names() == []


def test_bad_predict_input_writes_nothing(demo, tmp_path, capsys) -> None:
    assert _train(demo) == 0
    new = pd.read_csv(demo / "new_transactions.csv")
    out = tmp_path / "scores.csv"
    cases = {
        "unknown.csv": (
            new.assign(user_id=["stranger", *new["user_id"].tolist()[1:]]),
            "row 1, column 'user_id': unknown account 'stranger'",
        ),
        "empty.csv": (new.iloc[0:0], "no rows"),
        "repeat.csv": (pd.read_csv(demo / "transactions.csv").head(2), "already in the live graph"),
    }
    for name, (frame, message) in cases.items():
        frame.to_csv(tmp_path / name, index=False)
        args = ["predict", "fraud", "--input", str(tmp_path / name), "--out", str(out)]
        assert main(args) == 1
        assert message in capsys.readouterr().err
        assert not out.exists()
    path = tmp_path / "unknown.csv"
    assert (
        main(
            [
                "predict",
                "fraud",
                "--input",
                str(path),
                "live.on_unknown_account=add",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert len(pd.read_csv(out)) == len(new)


def test_unknown_model_and_solution_are_clear(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "nothing:1"]) == 1
    assert "unknown model" in capsys.readouterr().err.lower()
    assert main(["train", "nosuch"]) == 1
    assert (
        "unknown solution 'nosuch'; choose one of: defect, fraud, multimodal, nodule, tabular"
        in capsys.readouterr().err
    )


def test_overrides_after_config_file(demo: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"data:\n  source: transactions\n  path: {demo / 'transactions.csv'}\n")
    assert main(["train", "fraud", "--config", str(cfg), *TRAIN, "train.seed=4"]) == 0
    stored = ModelStore().resolve("fraud:1").config["solution_config"]
    assert stored["train"]["seed"] == 4 and stored["train"]["epochs"] == 3
    assert stored["data"]["path"] == str(demo / "transactions.csv")


def test_generate_options_are_checked_and_listed(tmp_path, capsys) -> None:
    assert main(["generate", "fraud", "--out", str(tmp_path / "g"), "colour=red"]) == 1
    assert "unknown key 'colour'; valid keys are: users, merchants" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()
    assert main(["generate", "fraud", "--help-options"]) == 0
    assert "new_frac" in capsys.readouterr().out
    (tmp_path / "file").write_text("x")
    assert main(["generate", "fraud", "--out", str(tmp_path / "file")]) == 1
    assert "is a file; give a folder" in capsys.readouterr().err


def test_predictor_scores_requests_one_at_a_time(demo: Path) -> None:
    from abyssal.solutions.loading import load_model

    assert _train(demo) == 0
    loaded = load_model("fraud:1")
    predictor = loaded.solution.predictor(loaded)
    new = pd.read_csv(demo / "new_transactions.csv", dtype=str).head(3)
    items = [predictor.parse(row) for row in new.to_dict("records")]
    responses = predictor.predict(items)
    assert [r["transaction_id"] for r in responses] == new["transaction_id"].tolist()
    assert all(0.0 <= r["risk"] <= 1.0 and isinstance(r["flagged"], bool) for r in responses)
    bad = {**new.iloc[0].to_dict(), "transaction_id": "X1", "amount": "ten"}
    with pytest.raises(DataError, match="request, row 1, column 'amount': not a number"):
        predictor.parse(bad)
    stranger = {**bad, "amount": 3, "user_id": "nobody"}
    with pytest.raises(DataError, match="unknown account 'nobody'"):
        predictor.parse(stranger)
    example = loaded.solution.example_inputs(loaded.cfg, loaded.spec)
    assert len(example) == len(loaded.solution.input_axes(loaded.cfg, loaded.spec)) == 6
    node_logits, txn_logits = loaded.model(*example)
    assert node_logits.shape == (example[0].shape[0],) and txn_logits.shape == (2,)
    node_logits, txn_logits = loaded.model(*example[:4])  # node scores alone
    assert node_logits.shape == (example[0].shape[0],) and txn_logits is None


def test_semicolon_file_is_named_as_such(demo, tmp_path, capsys) -> None:
    bad = tmp_path / "semicolons.csv"
    pd.read_csv(demo / "transactions.csv").to_csv(bad, index=False, sep=";")
    assert main(["train", "fraud", "data.source=transactions", f"data.path={bad}", *TRAIN]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: the file looks ';'-separated" in err and "missing column" not in err


def test_generated_stream_predicts_without_options(tmp_path, capsys) -> None:
    out = tmp_path / "short"
    args = ["generate", "fraud", "--out", str(out), "users=200", "rings=2", "days=4"]
    assert main([*args, "new_frac=0.1"]) == 0
    assert "by users first seen after the history left out" in capsys.readouterr().out
    history = pd.read_csv(out / "transactions.csv")
    new = pd.read_csv(out / "new_transactions.csv")
    assert new["user_id"].isin(set(history["user_id"])).all() and len(new) > 0
    train = ["train", "fraud", "data.source=transactions", f"data.path={out / 'transactions.csv'}"]
    assert main([*train, *TRAIN]) == 0
    assert main(["predict", "fraud", "--input", str(out / "new_transactions.csv")]) == 0
    assert f"scored {len(new)} new transactions" in capsys.readouterr().out


def test_predict_refuses_out_of_range_and_early_dates(demo, tmp_path, capsys) -> None:
    assert _train(demo) == 0
    new = pd.read_csv(demo / "new_transactions.csv", dtype=str)
    path = tmp_path / "new.csv"
    new.assign(timestamp=new["timestamp"].where(new.index != 1, "3000-01-01")).to_csv(
        path, index=False
    )
    assert main(["predict", "fraud", "--input", str(path)]) == 1
    assert f"{path}, row 2, column 'timestamp': timestamp '3000-01-01' is outside" in (
        capsys.readouterr().err
    )
    new.assign(timestamp=new["timestamp"].where(new.index != 2, "2001-01-01")).to_csv(
        path, index=False
    )
    assert main(["predict", "fraud", "--input", str(path)]) == 1
    err = capsys.readouterr().err
    assert (
        f"{path}, row 3, column 'timestamp': dated 2001-01-01 00:00:00 UTC, before the "
        "whole history" in err
    )


def test_evaluate_on_unlabelled_transactions_says_there_are_no_labels(demo, capsys) -> None:
    assert _train(demo) == 0
    capsys.readouterr()
    assert main(["evaluate", "fraud:1", f"data.path={demo / 'new_transactions.csv'}"]) == 1
    err = capsys.readouterr().err
    assert "there are no labels to train or evaluate on" in err and "nothing to train" not in err
