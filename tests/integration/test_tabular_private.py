"""train.privacy end to end: the tabular solution trained with DP-SGD through the CLI reports
epsilon in its run and its model version; the fraud solution's whole-graph batches are refused
before a run exists."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from abyssal.cli.main import main
from abyssal.core.errors import ConfigError
from abyssal.core.runs import Run, list_runs
from abyssal.core.store import ModelStore
from abyssal.train.api import train

QUICKSTART = Path(__file__).resolve().parents[2] / "configs" / "tabular" / "quickstart.yaml"
FAST = ["train.epochs=4", "train.progress=false", "model.hidden=16", "baselines=false"]
PRIVATE = ["train.privacy.enabled=true", "train.privacy.noise_multiplier=1.1"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo-tabular-private")
    assert main(["generate", "tabular", "--out", str(out), "missing_frac=0.05", "seed=0"]) == 0
    return out


def test_tabular_trains_privately_and_records_epsilon(demo: Path, capsys) -> None:
    data = f"data.path={demo / 'train.csv'}"
    args = ["train", "tabular", "--config", str(QUICKSTART), data, *FAST, *PRIVATE]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "differential privacy: epsilon=" in out and "registered tabular:1" in out
    mv = ModelStore().resolve("tabular:1")
    m = mv.metrics
    assert math.isfinite(m["epsilon"]) and m["epsilon"] > 0
    train_rows = m["train_rows"]
    assert m["delta"] == pytest.approx(1 / train_rows)  # the default: 1 / training examples
    assert m["noise_multiplier"] == 1.1 and m["max_grad_norm"] == 1.0
    assert f"epsilon={m['epsilon']:.4g}" in out
    run = Run.open(mv.run_id)
    rows = run.metrics_history()
    assert len(rows) == 4 and [r["epsilon"] for r in rows] == sorted(r["epsilon"] for r in rows)
    assert rows[-1]["epsilon"] == pytest.approx(m["epsilon"])
    assert run.info["metrics"]["epsilon"] == pytest.approx(m["epsilon"])
    assert "DP-SGD: noise_multiplier=1.1" in (run.path / "log.txt").read_text()
    # the version holds a plain model: it evaluates like any other
    assert main(["evaluate", "tabular:1", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["metrics"]["test_auroc"] == pytest.approx(m["test_auroc"], abs=1e-6)
    assert m["test_auroc"] > 0.6


def test_tabular_target_epsilon_and_refusals(demo: Path) -> None:
    data = f"data.path={demo / 'train.csv'}"
    out = train(
        "tabular",
        QUICKSTART,
        [
            data,
            *FAST,
            "train.privacy.enabled=true",
            "train.privacy.target_epsilon=3",
            "train.privacy.delta=1e-4",
        ],
    )
    assert out is not None
    assert out.metrics["epsilon"] <= 3.0 + 1e-9 and out.metrics["epsilon"] == pytest.approx(3, 0.05)
    assert out.metrics["delta"] == 1e-4
    before = len(list_runs())
    with pytest.raises(ConfigError, match=re.escape("train.grad_accum_steps=1")):
        train("tabular", QUICKSTART, [data, *FAST, *PRIVATE, "train.grad_accum_steps=2"])
    with pytest.raises(ConfigError, match=re.escape("not train.precision=bf16")):
        train("tabular", QUICKSTART, [data, *FAST, *PRIVATE, "train.precision=bf16"])
    assert len(list_runs()) == before  # refused before a run exists


def test_fraud_with_privacy_is_refused_before_a_run(capsys) -> None:
    synthetic = [
        "data.source=synthetic",
        "data.synthetic_users=120",
        "data.synthetic_rings=2",
        "data.synthetic_days=8",
        "data.synthetic_merchants=20",
        "train.epochs=1",
        "train.progress=false",
        "baselines=false",
    ]
    with pytest.raises(ConfigError, match="needs batches of separate examples") as err:
        train("fraud", None, [*synthetic, "train.privacy.enabled=true"])
    assert "FraudBatch" in str(err.value) and "a graph" in str(err.value)
    assert list_runs() == []
    assert main(["train", "fraud", *synthetic, "train.privacy.enabled=true"]) == 1
    assert "error: train.privacy needs batches of separate examples" in capsys.readouterr().err
