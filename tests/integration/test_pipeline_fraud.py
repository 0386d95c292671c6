"""``abyssal pipeline`` end to end on synthetic fraud data, three runs in one home:

1. the first run validates, trains, tests and deploys (no production version yet);
2. a run on drifted and corrupted data is stopped by validation, naming the columns, and trains
   nothing;
3. a run whose config yields a worse model is refused by the gate against production, retrains
   with the next attempt's overrides, and either deploys or stops with every attempt's reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from abyssal.cli.main import main
from abyssal.core.home import using_home
from abyssal.core.runs import list_runs
from abyssal.core.store import ModelStore
from abyssal.pipeline.run import run_pipeline
from abyssal.pipeline.spec import load_pipeline
from abyssal.solutions.fraud.sample import FraudSampleConfig, write_sample

pytest.importorskip("torch_geometric")

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["train.epochs=40", "model.hidden=16", "model.heads=2", "baselines=false"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pipeline")
    write_sample(FraudSampleConfig(users=500, rings=6, days=30), folder / "demo")
    frame = pd.read_csv(folder / "demo" / "transactions.csv", dtype=str)
    bad = frame.copy()
    bad["amount"] = (bad["amount"].astype(float) * 40).round(2).astype(str)  # drifted
    bad.loc[bad.index[:5], "amount"] = "12,50 EUR"  # corrupted cells
    bad.loc[bad.index[5], "transaction_id"] = bad.loc[bad.index[6], "transaction_id"]  # duplicate
    bad.to_csv(folder / "demo" / "bad.csv", index=False)
    spec = {
        "name": "fraud-daily",
        "solution": "fraud",
        "config": str(ROOT / "configs" / "fraud" / "quickstart.yaml"),
        "overrides": [f"data.path={folder / 'demo' / 'transactions.csv'}", *SMALL],
        "validate": {"label": "label", "keys": ["transaction_id"]},
        "gate": {
            "rules": [
                {"metric": "test_auprc", "min": 0.05},
                {"metric": "test_auprc", "max_drop": 0.02},
                {"metric": "p99_ms", "max": 60000},
            ]
        },
        "perf": {"batch": 16, "reps": 5, "price_per_hour": 2.0},
        "retrain": {"attempts": [[*SMALL, "train.lr=0.003"]]},
    }
    (folder / "pipeline.yaml").write_text(yaml.safe_dump(spec))
    return folder


def test_deploy_then_stop_on_bad_data_then_refuse_and_retrain(demo: Path) -> None:
    home = demo / "home"
    cfg = load_pipeline(demo / "pipeline.yaml")

    first = run_pipeline(cfg, home=home)
    assert first.status == "deployed", first.summary()
    with using_home(home):
        store = ModelStore()
        assert store.resolve("fraud:production").ref == first.deployed
        versions = len(store.list_versions("fraud"))
    steps = {s.name: s for s in first.attempts[0].steps}
    assert steps["perf-0"].outputs["cost_per_1000"] > 0
    assert steps["validate"].outputs["errors"] == 0
    gate = steps["gate-0"].outputs
    assert gate["production"] is None  # nothing to compare with: the drop rule is skipped
    assert all(c["passed"] for c in gate["checks"])

    bad = load_pipeline(
        demo / "pipeline.yaml", [f"overrides=[data.path={demo / 'demo' / 'bad.csv'}]"]
    )
    second = run_pipeline(bad, home=home)
    assert second.status == "stopped", second.summary()
    assert "amount" in second.reason and "transaction_id" in second.reason
    state = home / "pipelines" / "fraud-daily"
    report = json.loads((state / "steps" / "validate.json").read_text())
    checks = {f["check"] for f in report["report"]["checks"]["findings"]}
    assert {"dtype", "duplicate_key"} <= checks, checks
    assert "amount" in report["report"]["drifted"]
    with using_home(home):
        assert len(ModelStore().list_versions("fraud")) == versions  # nothing trained

    untrained = ["train.epochs=1", "train.lr=0.000000001", "model.hidden=4", "model.heads=1",
                 "baselines=false"]  # fmt: skip
    data = f"data.path={demo / 'demo' / 'transactions.csv'}"
    worse = load_pipeline(demo / "pipeline.yaml", [f"overrides=[{data},{','.join(untrained)}]"])
    third = run_pipeline(worse, home=home)
    assert len(third.attempts) == 2, third.summary()
    refused = third.attempts[0]
    assert refused.status == "stopped" and refused.ended_by == "gate-0"
    why = next(s.reason for s in refused.steps if s.name == "gate-0")
    assert "below production's" in why
    assert third.status in ("deployed", "refused")
    summary = json.loads((state / "summary.json").read_text())
    html = third.report.read_text()  # the report of the last run: both attempts, the refusal
    assert third.report == state / "report.html" and html.count("<svg") >= 3
    assert "below production" in html and "gate-1" in html
    assert summary["status"] == third.status and len(summary["attempts"]) == 2
    with using_home(home):
        production = ModelStore().resolve("fraud:production").ref
    assert production == (third.deployed if third.status == "deployed" else first.deployed)

    # each run is a run record in the store, keeping its own summary and report
    records = {r.id: r for r in list_runs(home) if r.kind == "pipeline"}
    assert set(records) == {first.run_id, second.run_id, third.run_id}
    assert records[first.run_id].status == "completed"
    assert records[first.run_id].info["outputs"] == [first.deployed]
    assert "test_auprc" in records[first.run_id].info["metrics"]
    kept = json.loads((records[second.run_id].path / "summary.json").read_text())
    assert kept["status"] == "stopped" and kept["run"] == second.run_id
    assert (records[second.run_id].path / "report.html").is_file()
    assert "validate: stopped" in (records[second.run_id].path / "log.txt").read_text()


def test_cli_runs_skips_what_finished_and_shows(demo: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("ABYSSAL_HOME", str(demo / "cli-home"))
    assert main(["pipeline", "run", str(demo / "pipeline.yaml")]) == 0
    out = capsys.readouterr().out
    assert "[2/5] train-0: done" in out and "fraud-daily: deployed" in out
    assert main(["pipeline", "run", str(demo / "pipeline.yaml")]) == 0
    out = capsys.readouterr().out  # production is new: validation and the gate compare with it
    assert "[1/5] validate: done" in out and "[4/5] gate-0: done" in out
    assert "[2/5] train-0: unchanged since the last run, skipped" in out  # nothing retrained
    assert main(["pipeline", "run", str(demo / "pipeline.yaml")]) == 0
    out = capsys.readouterr().out
    assert out.count("unchanged since the last run, skipped") == 5
    assert main(["pipeline", "show", "fraud-daily"]) == 0
    shown = capsys.readouterr().out
    assert "fraud-daily: deployed" in shown and "pass test_auprc" in shown
    assert "items/s" in shown and "drifted from fraud:1: none" in shown
    run_id = shown.split("(run ")[1].split(")")[0]
    assert main(["pipeline", "show", run_id]) == 0  # a run's id shows that run
    assert capsys.readouterr().out.startswith("fraud-daily: deployed")
