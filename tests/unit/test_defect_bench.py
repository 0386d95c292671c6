"""The NEU-DET benchmark's pure helpers: overrides, timing loop, agreement, targets, report
(benchmarks/ is not a package: the module is loaded from its file)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import defect

        yield defect
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_set_override_replaces_or_removes_a_key_and_leaves_the_input_alone(bench):
    overrides = ["a=1", "data.shots=5", "b=2"]
    assert bench.set_override(overrides, "data.shots", 10) == ["a=1", "b=2", "data.shots=10"]
    assert bench.set_override(overrides, "data.shots", None) == ["a=1", "b=2"]
    assert overrides == ["a=1", "data.shots=5", "b=2"]


def test_base_overrides_fix_the_split_and_quick_subsets_every_run(bench):
    full = bench.base_overrides(bench.parse_args([]))
    assert {"data.layout=neu_det", "data.split_seed=0", "data.val_frac=0.15"} <= set(full)
    assert "data.batch_size=64" in full and "model.backbone=resnet50" in full
    assert not any(o.startswith(("train.epochs=", "train.max_steps=", "data.shots=")) for o in full)
    quick = bench.base_overrides(bench.parse_args(["--quick"]), ssl=True)
    assert {"model.backbone=resnet18", "data.image_size=64", "train.max_steps=2"} <= set(quick)
    assert {"data.shots=5", "train.eval_every_steps=2", "train.device=cpu"} <= set(quick)


def test_parse_args_refuses_an_unknown_part_and_orders_the_rest(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--parts", "scratch,nonsense"])
    assert bench.parse_args(["--parts", "edge,ssl"]).parts == ["ssl", "edge"]


def test_time_calls_warms_up_then_times_whole_batches(bench):
    seen = []
    timing = bench.time_calls(seen.append, torch.zeros(10, 1, 4, 4), 4, 2, 3, budget_s=100.0)
    assert [len(x) for x in seen] == [4, 4, 4, 4, 4]  # 2 untimed + 3 timed, never the rest of 2
    assert (timing["batch"], timing["calls"]) == (4, 3)
    assert 0 <= timing["p50_ms"] <= timing["p99_ms"] and timing["images_per_s"] > 0


def test_time_calls_stops_at_the_minimum_once_the_budget_is_spent(bench):
    timing = bench.time_calls(lambda x: x, torch.zeros(3, 1, 2, 2), 1, 0, 50, budget_s=0.0)
    assert timing["calls"] == bench.MIN_CALLS


def test_agreement_counts_top1_matches_and_the_largest_probability_gap(bench):
    reference = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    other = torch.tensor([[0.6, 0.4], [0.7, 0.3]])
    got = bench.agreement(reference, other)
    assert got["top1_agreement"] == 0.5
    assert got["max_abs_prob_diff"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("status", "p50", "delta", "verdict"),
    [
        ("accepted", 9.6, 0.0, "reject (not faster)"),
        ("accepted", 5.0, -0.02, "reject (metric)"),
        ("accepted", 5.0, -0.005, "accept"),
        ("failed", None, None, "failed"),
    ],
)
def test_guard_verdict_applies_the_default_guard(bench, status, p50, delta, verdict):
    row = {"status": status, "p50_ms@1": p50, "metric_delta": delta}
    assert bench.guard_verdict(row, eager_p50=10.0) == verdict


def _run(ref: str, test: float, val: float = 0.9, overrides: list[str] | None = None) -> dict:
    metrics = {"test_accuracy": test, "val_accuracy": val, "val_macro_f1": val}
    return {"ref": ref, "overrides": overrides or [], "full_split": True, "metrics": metrics}


def _timing(rate: float) -> dict:
    return {"images_per_s": rate, "p50_ms": 1000 / rate, "p99_ms": 1000 / rate}


def _result(int8_accuracy: float = 0.975, threads: int = 2, quick: bool = False) -> dict:
    variants = [
        {"method": "pytorch-fp32", "test_accuracy": 0.98, "timings": {"1": _timing(5.0)}},
        {"method": "onnx-int8-static", "test_accuracy": int8_accuracy,
         "timings": {"1": _timing(12.0), "16": _timing(20.0)}},
    ]  # fmt: skip
    tuned = _run("defect-finetune:1", 0.99, overrides=["model.pretrained=defect-simclr:1"])
    parts = {
        "scratch": {"status": "ok", "run": _run("defect-scratch:1", 0.975)},
        "ssl": {"status": "ok", "finetune": tuned},
        "edge": {"status": "ok", "threads": threads, "variants": variants},
        "fewshot": {"status": "ok", "runs": {"10": _run("defect-shots10:1", 0.9)}},
    }
    return {"settings": {"quick": quick}, "parts": parts}


def test_targets_are_computed_from_the_measured_numbers(bench):
    rows = bench.targets(_result())
    assert [r["status"] for r in rows] == ["met", "met", "met", "met"]
    assert rows[0]["measured"] == "0.9900 (SSL fine-tune, defect-finetune:1)"
    assert "20.0 images/s at batch 16" in rows[2]["measured"]
    assert rows[3]["measured"].startswith("0.9000")


def test_edge_target_needs_two_threads_and_int8_within_a_point(bench):
    assert bench.targets(_result(int8_accuracy=0.96))[2]["status"] == "not met"
    assert bench.targets(_result(threads=4))[2]["status"] == "not measured"


def test_a_quick_run_meets_no_target(bench):
    rows = bench.targets(_result(quick=True))
    assert {r["status"] for r in rows} == {"not measured"}
    assert all(r["measured"].endswith("(quick smoke run: does not count)") for r in rows)


def test_accuracy_targets_skip_subset_runs(bench):
    result = _result()
    for part in ("scratch", "ssl"):
        for run in result["parts"][part].values():
            if isinstance(run, dict):
                run["full_split"] = False
    assert bench.targets(result)[0]["status"] == "not measured"


def test_best_classifier_goes_by_validation_accuracy(bench):
    parts = {
        "scratch": {"run": _run("defect-scratch:1", test=0.99, val=0.95)},
        "focal": {"run": _run("defect-focal:1", test=0.97, val=0.96)},
    }
    label, record = bench.best_classifier(parts)
    assert (label, record["ref"]) == ("focal", "defect-focal:1")
    assert bench.best_classifier({}) is None


def test_md_table_escapes_pipes(bench):
    lines = bench.md_table(["a", "b"], [["x|y", "1"]])
    assert lines == ["| a | b |", "|---|---|", "| x/y | 1 |"]


def test_markdown_reports_failed_and_skipped_parts_and_the_targets(bench):
    env = {"date": "2026-01-01", "git_commit": "abc", "machine": {"cpu": "cpu", "cores": 2},
           "versions": {"torch": "2", "torchvision": "0", "onnxruntime": "1"}}  # fmt: skip
    settings = {"backbone": "resnet50", "image_size": 224, "batch": 64, "device": "cuda",
                "epochs": None, "max_steps": None, "ssl_steps": None, "quick": False,
                "data": "d"}  # fmt: skip
    parts = {
        "scratch": {"status": "ok", "run": {**_run("defect-scratch:1", 0.975), "wall_s": 60.0}},
        "fewshot": {"status": "skipped", "reason": "time budget spent (10 s > 5 s)"},
        "edge": {"status": "failed", "error": "RuntimeError: no classifier"},
    }
    result = {"environment": env, "command": "python defect.py", "settings": settings}
    result["parts"] = parts
    result["targets"] = bench.targets(result)
    text = bench.markdown(result)
    assert "| scratch | defect-scratch:1 | 0.9750 |" in text
    assert "Status: skipped. time budget spent (10 s > 5 s)" in text
    assert "Status: failed. RuntimeError: no classifier" in text
    assert (
        "| test accuracy >= 0.97 on the full split | 0.9750 (scratch, defect-scratch:1) | met |"
        in text
    )


def test_edge_export_travels_in_pieces_and_imports_float16_rounded(bench, tmp_path, monkeypatch):
    from abyssal.core.store import ModelStore

    source, target = ModelStore(tmp_path / "a"), ModelStore(tmp_path / "b")
    state = {"w": torch.randn(64, 64), "steps": torch.tensor(3)}
    mv = source.register("defect-scratch", state, solution="defect", config={}, metrics={})
    monkeypatch.setattr(bench, "PIECE_BYTES", 4096)  # 64x64 float16 = 8 KiB: three pieces
    bench.export_version(source, mv.ref, tmp_path / "edge")
    assert len(list((tmp_path / "edge").glob("weights.part*"))) == 3
    ref = bench.import_version(target, tmp_path / "edge")
    back = target.load_weights(ref)
    assert back["w"].dtype == torch.float32 and torch.equal(back["w"], state["w"].half().float())
    assert torch.equal(back["steps"], state["steps"])
    piece = tmp_path / "edge" / "weights.part01"
    piece.write_bytes(piece.read_bytes()[:-1])
    with pytest.raises(RuntimeError, match="SHA-256 differs"):
        bench.import_version(target, tmp_path / "edge")
