"""The text solution end to end through the CLI on a tiny BERT built from a config: finetune
(LoRA), train (full), predict, evaluate with a confusion matrix, merge, INT8 through optimize
with the lineage adapter -> merged -> quantized, and several adapters on one base."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from abyssal.cli.main import main
from abyssal.core.errors import ConfigError, StoreError
from abyssal.core.runs import list_runs
from abyssal.core.store import ModelStore
from tests.unit.tiny_text import texts_csv, tiny_bert

pytest.importorskip("peft")
pytest.importorskip("transformers")

FAST = ["train.epochs=2", "train.lr=0.01", "train.progress=false", "train.device=cpu"]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("bert"))


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return texts_csv(tmp_path / "texts.csv")


def finetune(data: Path, base: Path, *extra: str) -> int:
    args = ["finetune", "text", f"data.path={data}", f"model.base={base}", *FAST, *extra]
    return main(args)


def test_finetune_predict_evaluate_merge_and_quantize(data, base, tmp_path, capsys) -> None:
    assert finetune(data, base, "lora.r=4", "--alias", "candidate") == 0
    out = capsys.readouterr().out
    assert "registered text-lora:1 (adapter" in out and "confusion matrix (test):" in out
    run = list_runs()[0]
    with open(run.path / "split.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 36 and {r["split"] for r in rows} == {"train", "val", "test"}

    truth = tmp_path / "new.csv"
    truth.write_text("text,label\nprofit rose,positive\nprofit fell,negative\n")
    scored = tmp_path / "scored.csv"
    args = ["predict", "text", "--model", "text-lora:candidate", "--input", str(truth)]
    assert main([*args, "--out", str(scored)]) == 0
    out = capsys.readouterr().out
    assert "against the file's labels: accuracy" in out
    with open(scored, newline="") as fh:
        written = list(csv.DictReader(fh))
    assert [r["true_label"] for r in written] == ["positive", "negative"]
    assert {"label", "probability", "p_positive", "p_negative", "p_neutral"} <= set(written[0])

    assert main(["evaluate", "text-lora:1"]) == 0
    out = capsys.readouterr().out
    assert "true \\ predicted" in out and "negative" in out

    assert main(["merge", "text-lora:1"]) == 0
    assert "registered text-lora-merged:1 (parent text-lora:1)" in capsys.readouterr().out
    pytest.importorskip("onnxruntime")
    args = ["optimize", "text-lora-merged:1", "--methods", "onnx-int8-dynamic", "--target", "cpu"]
    guard = ["--tolerance", "1", "--min-gain", "-1", "--batch-sizes", "1,4", "--reps", "5"]
    assert main([*args, *guard]) == 0
    assert "registered: onnx-int8-dynamic -> text-lora-merged:2" in capsys.readouterr().out
    store = ModelStore()
    quantized = store.resolve("text-lora-merged:2")
    merged = store.resolve(quantized.lineage["parent"])
    assert merged.lineage["parent"] == "text-lora:1"
    assert merged.metrics["merge_max_abs_logit_diff"] < 1e-4
    assert main(["predict", "text", "--model", "text-lora-merged:2", "--input", str(truth)]) == 0
    assert "predicted 2 rows" in capsys.readouterr().out


def test_full_fine_tune_through_train(data, base, capsys) -> None:
    args = ["train", "text", f"data.path={data}", f"model.base={base}", *FAST]
    assert main(args) == 0
    mv = ModelStore().resolve("text:1")
    assert [a.role for a in mv.artifacts] == ["weights"]
    assert mv.metrics["trainable_share"] == 1.0
    assert finetune(data, base, "model.tuning=full") != 0
    assert "for model.tuning=full use `abyssal train`" in capsys.readouterr().err


def test_several_adapters_on_one_base_chosen_per_call(data, base, tmp_path) -> None:
    from abyssal.solutions.text.adapters import AdapterSet

    two = tmp_path / "two.csv"
    lines = [f"profit rose {i % 5},up\nprofit fell {i % 5},down\n" for i in range(12)]
    two.write_text("text,label\n" + "".join(lines))
    assert finetune(data, base, "--name", "bank-a") == 0
    assert finetune(two, base, "--name", "bank-b", "lora.r=2") == 0
    adapters = AdapterSet(["bank-a:1", "bank-b:1"])
    a = adapters.predict(["profit rose", "shares flat"], adapter="bank-a")
    b = adapters.predict(["profit rose", "shares flat"], adapter="bank-b:1")
    assert {r["label"] for r in a} <= {"negative", "neutral", "positive"}
    assert {r["label"] for r in b} <= {"down", "up"}
    assert [r["adapter"] for r in a + b] == ["bank-a:1"] * 2 + ["bank-b:1"] * 2
    with pytest.raises(ConfigError, match="not in this set"):
        adapters.predict(["x"], adapter="bank-c")
    other = tiny_bert(tmp_path / "other", seed=3)
    assert finetune(data, other, "--name", "bank-c") == 0
    with pytest.raises(StoreError, match="another base"):
        adapters.add("bank-c:1")
