"""``abyssal optimize`` end to end on a registered tabular model: the guard, registration of a
child version that loads and predicts like its parent, and every refusal."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from abyssal.cli.main import main
from abyssal.core.errors import AbyssalError
from abyssal.core.store import ModelStore
from abyssal.optimize import OptimizeError, optimize_version, resolve_methods
from abyssal.optimize import api as optimize_api
from abyssal.optimize.candidates import Candidate
from abyssal.solutions.loading import load_model

QUICKSTART = Path(__file__).resolve().parents[2] / "configs" / "tabular" / "quickstart.yaml"
FAST = ["train.epochs=3", "train.progress=false", "model.hidden=16"]
QUICK = {"batch_sizes": (1, 8), "reps": 12, "warmup": 2, "analyse_graph": False}


@pytest.fixture
def parent(tmp_path: Path) -> tuple[str, Path]:
    demo = tmp_path / "demo"
    assert main(["generate", "tabular", "--out", str(demo), "seed=0"]) == 0
    args = ["train", "tabular", "--config", str(QUICKSTART), f"data.path={demo / 'train.csv'}"]
    assert main([*args, *FAST]) == 0
    return "tabular:1", demo


class _Slow(torch.nn.Module):
    """A candidate that is the model plus a sleep: it must lose."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        time.sleep(0.004)
        return self.model(*args)


def test_a_slower_candidate_is_rejected_and_leaves_no_version(parent, monkeypatch) -> None:
    ref, _ = parent

    def slow(method: str, ctx) -> Candidate:
        return Candidate(method, _Slow(ctx.subject.model), "compile", {}, [], 1)

    monkeypatch.setattr(optimize_api, "build_candidate", slow)
    report = optimize_version(ref, "cpu", ["compile"], **QUICK)
    result = report.results[0]
    assert result.status == "rejected" and "not faster" in result.reason
    assert result.timings[1].p50_ms > report.baseline.timings[1].p50_ms
    assert [v.ref for v in ModelStore().list_versions("tabular")] == [ref]
    assert "registered: nothing" in report.render()


def test_a_failure_midway_registers_nothing(parent, monkeypatch) -> None:
    ref, _ = parent
    real = optimize_api.measure
    calls = {"n": 0}

    def breaks(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:  # after the eager reference and one candidate's first size
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(optimize_api, "measure", breaks)
    with pytest.raises(KeyboardInterrupt):
        optimize_version(ref, "cpu", ["onnx"], min_gain=-100.0, **QUICK)
    assert [v.ref for v in ModelStore().list_versions("tabular")] == [ref]


def test_a_failing_method_is_reported_not_fatal(parent, monkeypatch) -> None:
    ref, _ = parent

    def broken(method: str, ctx) -> Candidate:
        raise AbyssalError("export failed at aten::frobnicate")

    monkeypatch.setattr(optimize_api, "build_candidate", broken)
    report = optimize_version(ref, "cpu", ["onnx"], **QUICK)
    assert report.results[0].status == "failed"
    assert "aten::frobnicate" in report.results[0].reason
    assert len(ModelStore().list_versions("tabular")) == 1


@pytest.mark.parametrize("method", ["onnx", "int8-dynamic", "int8-weight"])
def test_a_registered_child_loads_evaluates_and_predicts_like_its_parent(
    parent, method, tmp_path, capsys
) -> None:
    ref, demo = parent
    # min_gain -100: accept whatever the timing, to test registration and loading
    report = optimize_version(ref, "cpu", [method], min_gain=-100.0, **QUICK)
    result = report.results[0]
    assert result.status == "accepted", result.reason
    child = result.registered
    assert child == "tabular:2"
    mv = ModelStore().resolve(child)
    assert mv.base == ref and mv.lineage["parent"] == ref and mv.lineage["method"] == method
    assert mv.config["optimization"]["measurements"]["candidate"]["1"]["calls"] >= 10
    assert mv.metrics["p50_ms@1"] > 0 and mv.metrics["size_bytes"] > 0
    before, after = load_model(ref), load_model(child)
    assert type(after.model).__name__ == "OptimizedModel"
    x = after.solution.model_inputs(after.cfg, after.solution.prepare(after.cfg), 16, 3)
    with torch.inference_mode():
        diff = (before.model(*x).float() - after.model(*x).float()).abs().max()
    assert float(diff) < (1e-4 if method == "onnx" else 0.1)
    capsys.readouterr()
    assert main(["evaluate", child]) == 0
    assert "AUROC" in capsys.readouterr().out
    out = tmp_path / "pred.csv"
    args = ["predict", "tabular", "--model", child, "--input", str(demo / "new_rows.csv")]
    assert main([*args, "--out", str(out)]) == 0
    assert out.exists() and len(out.read_text().splitlines()) > 10
    assert main(["models", "compare", ref, child]) == 0
    shown = capsys.readouterr().out
    assert f"{child} is {ref} optimized with {method}" in shown and "speed-up" in shown


def test_the_cli_runs_and_prints_the_table(parent, capsys) -> None:
    ref, _ = parent
    args = ["optimize", ref, "--methods", "onnx", "--batch-sizes", "1,4", "--reps", "10"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "eager" in out and "onnx" in out and "p50 ms @1" in out and "registered:" in out


def test_unknown_methods_and_targets_list_the_valid_ones() -> None:
    with pytest.raises(OptimizeError, match=r"valid methods: compile, .*onnx"):
        resolve_methods(["fastest"], "cpu")
    with pytest.raises(OptimizeError, match="valid targets: cpu, cuda"):
        resolve_methods(None, "tpu")
    with pytest.raises(OptimizeError, match="applies to target cuda, not cpu"):
        resolve_methods(["cudagraph"], "cpu")
    assert "compile-cudagraphs" not in resolve_methods(None, "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_says_so_in_one_line(parent, capsys) -> None:
    assert main(["optimize", parent[0], "--target", "cuda"]) != 0
    err = capsys.readouterr().err.strip()
    assert "--target cuda needs a CUDA GPU" in err and len(err.splitlines()) == 1


def test_an_optimized_version_is_not_optimized_again(parent) -> None:
    ref, _ = parent
    report = optimize_version(ref, "cpu", ["onnx"], min_gain=-100.0, **QUICK)
    with pytest.raises(AbyssalError, match="already an optimized version"):
        optimize_version(report.results[0].registered, "cpu", ["onnx"], **QUICK)


def test_a_fraud_transaction_graph_optimizes_to_onnx_and_scores_through_it(tmp_path, capsys):
    demo = tmp_path / "fraud"
    args = ["generate", "fraud", "--out", str(demo), "users=150", "rings=3", "days=15"]
    assert main([*args, "new_frac=0.03"]) == 0
    train = ["train", "fraud", "data.source=transactions", f"data.path={demo / 'transactions.csv'}"]
    assert main([*train, "train.epochs=2", "train.progress=false", "model.hidden=16"]) == 0
    report = optimize_version("fraud:1", "cpu", ["onnx"], min_gain=-100.0, **QUICK)
    result = report.results[0]
    assert result.status == "accepted", result.reason
    assert result.max_abs_diff < 1e-4  # account and transaction logits alike
    child = load_model(result.registered)
    parent = load_model("fraud:1")
    example = parent.solution.example_inputs(parent.cfg, parent.spec)
    assert len(example) == 6  # the graph and its transactions
    with torch.inference_mode():
        for got, want in zip(child.model(*example), parent.model(*example), strict=True):
            assert torch.allclose(got, want, atol=1e-4)
    with pytest.raises(AbyssalError, match="exported for 6 inputs and is called with 4"):
        child.model(*example[:4])
    capsys.readouterr()
    assert main(["evaluate", result.registered]) == 0
    assert "AUPRC" in capsys.readouterr().out
    new = ["predict", "fraud", "--model", result.registered, "--input"]
    assert main([*new, str(demo / "new_transactions.csv"), "--top", "1"]) == 0


class _Branchy(torch.nn.Module):
    """A forward neither torch.export nor torch.fx can capture (a branch on tensor values)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        if y.sum() > 0:
            return y
        return -y


def test_an_uncapturable_model_is_optimized_eagerly_with_the_reason() -> None:
    from abyssal.optimize import Subject, optimize_subject

    def make(batch: int, seed: int) -> tuple[torch.Tensor]:
        return (torch.randn(batch, 8, generator=torch.Generator().manual_seed(seed)),)

    subject = Subject("branchy", _Branchy().eval(), make, ({0: "batch"},))
    report = optimize_subject(subject, "cpu", ["int8-weight"], **QUICK | {"analyse_graph": True})
    assert report.graph is None and report.plan is None
    assert "not captured, eager only" in report.graph_note
    assert "if y.sum() > 0" in report.graph_note  # the line that broke capture
    assert report.results[0].status in ("accepted", "rejected")  # the method still ran
    assert report.results[0].max_abs_diff < 0.05


def test_bad_settings_are_refused_before_anything_runs(capsys) -> None:
    from abyssal.optimize import Subject, optimize_subject
    from abyssal.optimize.candidates import check_target

    with pytest.raises(OptimizeError, match="unknown target 'tpu'; valid targets: cpu, cuda"):
        check_target("tpu")
    model = torch.nn.Linear(4, 2)
    subject = Subject("tiny", model, lambda b, s: (torch.randn(b, 4),), ({0: "batch"},))
    for bad, match in (
        ({"reps": 0}, "reps must be a whole number >= 1"),
        ({"batch_sizes": (1, 0)}, "batch sizes must be whole numbers >= 1"),
        ({"tolerance": float("nan")}, "tolerance must be a finite number"),
    ):
        with pytest.raises(AbyssalError, match=match):
            optimize_subject(subject, "cpu", ["compile"], **bad)
    with pytest.raises(SystemExit):
        main(["optimize", "tabular:1", "--batch-sizes", "1,x"])
    assert "--batch-sizes: expected a whole number, got 'x'" in capsys.readouterr().err


def test_every_kept_onnx_candidate_registers_its_own_file(parent) -> None:
    ref, _ = parent
    methods = ["onnx", "onnx-int8-dynamic", "onnx-int8-static"]
    report = optimize_version(ref, "cpu", methods, keep="all", min_gain=-100.0, **QUICK)
    assert [r.status for r in report.results] == ["accepted"] * 3
    store = ModelStore()
    shas = {store.resolve(r.registered).artifacts[0].sha256 for r in report.results}
    assert len(shas) == 3  # FP32, dynamic INT8 and static INT8 are three different files
    for result in report.results:  # each registered file runs what was measured
        loaded = load_model(result.registered)
        assert loaded.version.artifacts[0].name in ("model.onnx", "model.int8.onnx")
        numeric, categorical = loaded.solution.example_inputs(loaded.cfg, loaded.spec)
        with torch.inference_mode():
            got = loaded.model(numeric, categorical)
            want = result.candidate.module(numeric, categorical)
        assert torch.allclose(got, want)
