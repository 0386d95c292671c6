"""``abyssal audit`` end to end on the tabular solution: the model card with metrics,
fairness by a column of the training table, explanations and a PII scan; a policy it passes, one
it fails (planted e-mail addresses in the training table, a metric bound, a fairness bound), the
files written beside the version, and the pipeline's gate refusing a version that fails."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from abyssal.cli.main import main
from abyssal.govern.audit import audits_folder, latest_audit

pytest.importorskip("captum")
pytest.importorskip("fairlearn")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "configs" / "tabular" / "quickstart.yaml"
FAST = ["train.epochs=4", "train.progress=false", "model.hidden=16", "baselines=false"]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("audit")
    assert main(["generate", "tabular", "--out", str(root / "demo"), "seed=0"]) == 0
    table = pd.read_csv(root / "demo" / "train.csv")
    table["contact"] = [f"patient{k}@clinic.example.org" for k in range(len(table))]
    table.to_csv(root / "demo" / "with_pii.csv", index=False)
    mp = pytest.MonkeyPatch()
    mp.setenv("ABYSSAL_HOME", str(root / "home"))
    try:
        for data, alias, ignore in (("train.csv", "clean", "[id]"),
                                    ("with_pii.csv", "leaky", "[id,contact]")):  # fmt: skip
            path = root / "demo" / data
            args = ["train", "tabular", "--config", str(QUICKSTART), "--alias", alias,
                    f"data.path={path}", f"data.ignore={ignore}", *FAST]  # fmt: skip
            assert main(args) == 0
    finally:
        mp.undo()
    return root


def policy(path: Path, **sections: object) -> Path:
    path.write_text(yaml.safe_dump(sections))
    return path


def test_a_policy_the_version_meets_passes_and_its_card_is_stored(home, monkeypatch, capsys):
    monkeypatch.setenv("ABYSSAL_HOME", str(home / "home"))
    rules = policy(
        home / "ok.yaml",
        intended_use="a second reader for breast-cancer biopsies",
        metrics=[{"metric": "test_auroc", "min": 0.5}],
        fairness={"attribute": "size_band", "key": "id", "bootstrap": 200,
                  "mitigate": "equalized_odds"},
        privacy={"pii": "forbid"},
        explain={"items": 2, "required": True},
    )  # fmt: skip
    assert main(["audit", "tabular:clean", "--policy", str(rules)]) == 0
    out = capsys.readouterr().out
    assert "PASSED" in out and "pass  explanations" in out and "pass  privacy" in out
    record = latest_audit("tabular:1")
    assert record is not None and record["passed"] and record["policy"] == "ok"
    card = record["card"]
    assert card["model"]["lineage"] == ["tabular:1"]
    assert card["fairness"]["attribute"] == "size_band" and "mitigation" in card["fairness"]
    assert card["explanations"]["available"] and len(card["explanations"]["items"]) == 2
    assert "mean radius" in card["explanations"]["global_importance"]
    folder = next(p for p in audits_folder("tabular:1").iterdir() if p.is_dir())
    assert {"audit.json", "audit.html", "audit.pdf"} <= {p.name for p in folder.iterdir()}
    assert sorted(p.name for p in (folder / "pages").iterdir())[0] == "page-1.png"


def test_pii_a_metric_bound_and_a_fairness_bound_fail_by_name(home, monkeypatch, capsys):
    monkeypatch.setenv("ABYSSAL_HOME", str(home / "home"))
    rules = policy(
        home / "strict.yaml",
        metrics=[{"metric": "test_auroc", "min": 0.9999}],
        fairness={"attribute": "size_band", "key": "id", "bootstrap": 50,
                  "max_demographic_parity_difference": 0.0},
        privacy={"pii": "forbid"},
        explain={"items": 0},
    )  # fmt: skip
    assert main(["audit", "tabular:leaky", "--policy", str(rules)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  privacy: PII in the training data: found: contact (EMAIL)" in out
    assert "FAIL  metric test_auroc" in out and "FAIL  fairness: demographic parity" in out
    record = json.loads((sorted(audits_folder("tabular:2").glob("*/audit.json")))[-1].read_text())
    assert not record["passed"]
    text = json.dumps(record)
    assert "clinic.example.org" not in text  # PII named by kind, column and row, never value


def test_the_pipeline_gate_refuses_a_version_that_fails_its_audit(home, monkeypatch) -> None:
    from abyssal.pipeline.run import run_pipeline
    from abyssal.pipeline.spec import load_pipeline

    monkeypatch.setenv("ABYSSAL_HOME", str(home / "gate-home"))
    strict = policy(home / "gate.yaml", privacy={"pii": "forbid"}, explain={"items": 0})
    spec = {
        "name": "cancer",
        "solution": "tabular",
        "config": str(QUICKSTART),
        "overrides": [
            f"data.path={home / 'demo' / 'with_pii.csv'}",
            "data.ignore=[id,contact]",
            *FAST,
        ],
        "validate": {"label": "diagnosis", "keys": ["id"]},
        "gate": {"rules": [{"metric": "test_auroc", "min": 0.5}], "audit": str(strict)},
        "perf": {"batch": 8, "reps": 2},
    }
    (home / "cancer.yaml").write_text(yaml.safe_dump(spec))
    out = run_pipeline(load_pipeline(home / "cancer.yaml"), home=home / "gate-home")
    assert out.status == "refused", out.summary()
    assert "the audit (gate) failed: privacy: PII in the training data" in out.reason


def test_pipeline_validation_reports_or_stops_on_personal_data(home, monkeypatch) -> None:
    from abyssal.pipeline.run import run_pipeline
    from abyssal.pipeline.spec import load_pipeline

    monkeypatch.setenv("ABYSSAL_HOME", str(home / "pii-home"))
    data = f"data.path={home / 'demo' / 'with_pii.csv'}"
    spec = {
        "name": "pii",
        "solution": "tabular",
        "config": str(QUICKSTART),
        "overrides": [data, "data.ignore=[id,contact]", *FAST],
        "validate": {"label": "diagnosis", "pii": "stop"},
        "perf": {"batch": 8, "reps": 2},
    }
    (home / "pii.yaml").write_text(yaml.safe_dump(spec))
    out = run_pipeline(load_pipeline(home / "pii.yaml"), home=home / "pii-home")
    assert out.status == "stopped", out.summary()
    assert "personal data in contact (EMAIL) in 512 rows, e.g. rows 1, 2, 3" in out.reason
    scan = home / "pii-home" / "pipelines" / "pii" / "steps" / "validate" / "pii.json"
    assert "clinic.example.org" not in scan.read_text()
    report = run_pipeline(load_pipeline(home / "pii.yaml", ["validate.pii=report"]),
                          home=home / "pii-home")  # fmt: skip
    validate = report.attempts[0].outputs["validate"]
    assert report.status == "deployed" and validate["pii"][0].startswith("contact (EMAIL)")
