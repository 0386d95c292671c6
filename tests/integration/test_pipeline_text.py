"""``abyssal pipeline`` on the text solution (a tiny BERT): after a first run deploys, new texts
of the same kind pass validation, and texts of another kind are stopped by embedding drift (the
production version embeds a sample of its own training texts and of the new ones)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from abyssal.pipeline.run import run_pipeline
from abyssal.pipeline.spec import load_pipeline
from tests.unit.tiny_text import texts_csv, tiny_bert

pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[2]
FAST = ["train.epochs=2", "train.lr=0.01", "train.progress=false", "train.device=cpu",
        "model.tuning=full", "train.patience=0"]  # fmt: skip


def write_texts(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def test_other_texts_are_stopped_by_embedding_drift(tmp_path: Path) -> None:
    base = tiny_bert(tmp_path / "bert")
    first = texts_csv(tmp_path / "texts.csv")
    with first.open(newline="") as fh:
        same = [tuple(r) for r in list(csv.reader(fh))[1:]][::-1]  # the same texts, reordered
    write_texts(tmp_path / "same.csv", same)
    labels = ["positive", "negative", "neutral"]
    other = [(f"lorem ipsum dolor sit amet {k} consectetur adipiscing elit sed do", labels[k % 3])
             for k in range(36)]  # fmt: skip
    write_texts(tmp_path / "other.csv", other)
    spec = {
        "name": "news",
        "solution": "text",
        "config": str(ROOT / "configs" / "text" / "quickstart.yaml"),
        "overrides": [f"data.path={first}", f"model.base={base}", *FAST],
        "validate": {"label": "label"},
        "gate": {"rules": [{"metric": "test_accuracy", "min": 0.0}]},
        "perf": {"batch": 4, "reps": 2},
    }
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(spec))
    home = tmp_path / "home"

    def run(data: Path) -> object:
        overrides = ",".join([f"data.path={data}", f"model.base={base}", *FAST])
        return run_pipeline(load_pipeline(tmp_path / "p.yaml", [f"overrides=[{overrides}]"]),
                            home=home)  # fmt: skip

    deployed = run(first)
    assert deployed.status == "deployed", deployed.summary()
    calm = run(tmp_path / "same.csv")
    validate = calm.attempts[0].outputs["validate"]
    assert not validate["embedding_drift"]["drifted"], validate["embedding_drift"]
    assert validate["embedding_drift"]["reference"] == deployed.deployed
    stopped = run(tmp_path / "other.csv")
    assert stopped.status == "stopped", stopped.summary()
    assert "embeddings drifted" in stopped.reason
    text = home / "pipelines" / "news" / "steps" / "validate" / "embedding_drift.txt"
    assert "drifted" in text.read_text()
    record = json.loads((home / "pipelines" / "news" / "summary.json").read_text())
    assert record["status"] == "stopped"
