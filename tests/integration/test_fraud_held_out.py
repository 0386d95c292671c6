"""The fraud solution's held-out predictions (``Solution.held_out``) on a small synthetic sample
with segments: one row per labelled test account, the scores ``evaluate`` computes, ready for the
fairness report."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from abyssal.govern.fairness import group_report
from abyssal.solutions.fraud.metrics import ranking_metrics
from abyssal.solutions.fraud.sample import FraudSampleConfig, write_sample
from abyssal.solutions.fraud.segments import plant_segments
from abyssal.solutions.fraud.synthetic import generate_transactions
from abyssal.solutions.loading import load_model
from abyssal.train.api import train

pytest.importorskip("torch_geometric")

ROOT = Path(__file__).resolve().parents[2]
TINY = ["train.epochs=3", "train.progress=false", "model.hidden=16", "model.heads=2"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fraud-held-out")
    options = FraudSampleConfig(users=300, rings=4, days=20, segments=True, segment_bias=2.0)
    lines = write_sample(options, out)
    assert any(line.startswith("accounts.csv") and "bias 2" in line for line in lines)
    return out


def test_held_out_is_the_test_split_scored_as_evaluate_scores_it(demo: Path) -> None:
    overrides = [f"data.path={demo / 'transactions.csv'}", "baselines=false", *TINY]
    outcome = train("fraud", ROOT / "configs" / "fraud" / "quickstart.yaml", overrides)
    loaded = load_model(outcome.version.ref)
    sol, cfg = loaded.solution, loaded.cfg
    data = sol.prepare(cfg)
    frame = sol.held_out(cfg, loaded.model, data)

    assert frame.columns.tolist() == ["id", "label", "score"]
    assert len(frame) == int(data.masks["test"].sum()) and frame["id"].is_unique
    assert set(frame["label"]) <= {0, 1} and frame["score"].between(0, 1).all()
    users = pd.read_csv(demo / "transactions.csv", dtype=str)["user_id"]
    assert set(frame["id"]) <= set(users)  # account ids as in the data
    truth = pd.read_csv(demo / "transactions.csv").groupby("user_id")["label"].max()
    assert (truth.loc[frame["id"]].to_numpy() == frame["label"].to_numpy()).all()

    # the risk evaluate's metrics come from: its AUPRC is the stored test_auprc
    auprc = ranking_metrics(frame["label"].to_numpy(), frame["score"].to_numpy())["auprc"]
    assert auprc == pytest.approx(outcome.metrics["test_auprc"], abs=1e-5)

    segments = pd.read_csv(demo / "accounts.csv", dtype=str)
    joined = frame.merge(segments, left_on="id", right_on="user_id", validate="one_to_one")
    assert len(joined) == len(frame) and set(joined["segment"]) == {"A", "B"}
    report = group_report(joined, "segment", n_boot=50)
    assert [g.group for g in report.groups] == ["A", "B"]
    assert sum(g.count for g in report.groups) == len(frame)


def test_planted_bias_adds_bursts_only_to_honest_b_accounts() -> None:
    data = generate_transactions(n_users=300, n_merchants=50, n_rings=4, days=20, seed=3)
    control, biased = plant_segments(data, seed=3), plant_segments(data, bias=3.0, seed=3)
    pd.testing.assert_frame_equal(control.accounts, biased.accounts)  # same segments
    assert control.data.transactions.equals(data.transactions) and control.planted["bursts"] == 0
    segments = biased.accounts.set_index("user_id")["segment"]
    count = lambda f: f.groupby("user_id").size()  # noqa: E731
    extra = count(biased.data.transactions).sub(count(data.transactions), fill_value=0)
    grown = extra[extra > 0].index
    assert extra.sum() == biased.planted["transactions"] > 0
    assert (segments.loc[grown] == "B").all()
    fraudsters = set(data.user_labels.loc[data.user_labels["label"] == 1, "user_id"])
    assert not fraudsters & set(grown)
    assert biased.data.transactions["label"].sum() == data.transactions["label"].sum()
    assert biased.data.transactions["timestamp"].is_monotonic_increasing
    assert biased.data.transactions["transaction_id"].is_unique

    shared = plant_segments(data, bias=3.0, fraud_proxy=2.0, seed=3)  # fraud bursts too
    txn = shared.data.transactions
    added = txn["label"].sum() - data.transactions["label"].sum()
    assert added == shared.planted["fraud_transactions"] > 0  # labelled fraudulent
    assert set(txn.loc[txn["label"] == 1, "user_id"]) <= fraudsters
    assert shared.planted["transactions"] == biased.planted["transactions"]  # same B bursts


def test_decisions_are_chosen_on_the_transactions_the_service_scores(demo: Path) -> None:
    """Operating points of a transactions model: the validation split's transactions with
    their labels and the transaction risk (``risk`` in the service), not its accounts; on
    transactions of new data, ``score_table`` gives the same risk."""
    overrides = [f"data.path={demo / 'transactions.csv'}", "baselines=false", *TINY]
    outcome = train("fraud", ROOT / "configs" / "fraud" / "quickstart.yaml", overrides)
    loaded = load_model(outcome.version.ref)
    sol, cfg = loaded.solution, loaded.cfg
    data = sol.prepare(cfg)
    frame = sol.decision_frame(cfg, loaded.model, data, split="val")
    table = pd.read_csv(demo / "transactions.csv", dtype={"transaction_id": str})
    users = set(sol.held_out(cfg, loaded.model, data, split="val")["id"])
    assert set(frame["id"]) == set(table[table["user_id"].isin(users)]["transaction_id"])
    truth = table.set_index("transaction_id")["label"]
    assert (truth.loc[frame["id"]].to_numpy() == frame["label"].to_numpy()).all()
    whole = pd.Series(sol.score_table(loaded, table), index=table["transaction_id"])
    assert whole.loc[frame["id"]].to_numpy() == pytest.approx(frame["score"].to_numpy(),
                                                              abs=1e-5)  # fmt: skip
