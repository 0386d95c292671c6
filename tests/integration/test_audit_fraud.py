"""``abyssal audit`` on the fraud solution: synthetic accounts with a segment, the fairness table
by segment with the equalized-odds mitigation, attention explanations of the riskiest accounts
with the rings as the solution's own explanations, and the report's pages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from abyssal.cli.main import main
from abyssal.govern.audit import latest_audit

pytest.importorskip("torch_geometric")
pytest.importorskip("fairlearn")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[2]


def test_the_fraud_audit_has_segments_attention_and_rings(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("ABYSSAL_HOME", str(tmp_path / "home"))
    sample = tmp_path / "demo"
    args = ["generate", "fraud", "--out", str(sample), "users=400", "rings=4", "days=20",
            "segments=true", "segment_bias=3", "fraud_proxy=1.5"]  # fmt: skip
    assert main(args) == 0
    train = ["train", "fraud", "--config", str(ROOT / "configs" / "fraud" / "quickstart.yaml"),
             f"data.path={sample / 'transactions.csv'}", "train.epochs=15", "model.hidden=16",
             "model.heads=2", "baselines=false", "train.progress=false"]  # fmt: skip
    assert main(train) == 0
    policy = {
        "fairness": {"attribute": "segment", "table": str(sample / "accounts.csv"),
                     "key": "user_id", "bootstrap": 100, "mitigate": "equalized_odds",
                     "max_false_positive_rate_difference": 1.0},
        "privacy": {"pii": "forbid"},
        "explain": {"items": 2, "required": True},
    }  # fmt: skip
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
    capsys.readouterr()
    assert main(["audit", "fraud:1", "--policy", str(tmp_path / "policy.yaml")]) == 0
    out = capsys.readouterr().out
    assert "pass  fairness: false-positive rate difference" in out and "PASSED" in out
    card = latest_audit("fraud:1")["card"]
    groups = {g["group"] for g in card["fairness"]["report"]["groups"]}
    assert groups == {"A", "B"}
    mitigation = card["fairness"]["mitigation"]
    assert set(mitigation["thresholds"]) == {"A", "B"} and "auprc" in mitigation["cost"]
    explained = card["explanations"]
    assert "attention" in explained["method"] and len(explained["items"]) == 2
    for item in explained["items"]:  # attention weights over the account's neighbours
        assert item["scores"] and all(0 <= v <= 1 for v in item["scores"].values())
    assert card["privacy"]["pii"]["columns"] == []  # ids and amounts are not personal data
    text = json.dumps(card)
    assert "test_auprc" in text
