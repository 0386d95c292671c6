"""The Flickr8k retrieval benchmark's arithmetic and report: per-row means and intervals over
seeds, the paired gain of re-ranking over the dual encoder, chance levels, and the avdigits
script handing ``--dataset flickr8k`` over (benchmarks/ is not a package: loaded from files)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import multimodal_retrieval

        yield multimodal_retrieval
    finally:
        sys.path.remove(str(BENCHMARKS))


def _run(seed: int, dual: float, rerank: float, cross: float) -> dict:
    rows = {
        name: {c: value for c in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10",
                                  "mean_recall")}
        for name, value in (("dual", dual), ("rerank", rerank), ("cross", cross))
    }  # fmt: skip
    return {
        "seed": seed, "rows": rows, "test_images": 200, "test_texts": 1000, "temperature": 0.05,
        "best_epoch": 3, "epochs_run": 5, "train_seconds": 100.0, "data": "flickr",
    }  # fmt: skip


def test_the_gain_is_paired_by_seed_and_the_report_states_chance(bench) -> None:
    record = {
        "environment": {
            "date": "d", "git_commit": "c", "versions": {},
            "machine": {"cpu": "cpu", "cores": 2, "platform": "linux", "gpu": None},
        },
        "command": "python benchmarks/multimodal_retrieval.py",
        "runs": [_run(0, 0.10, 0.12, 0.09), _run(1, 0.20, 0.21, 0.18), _run(2, 0.15, 0.18, 0.12)],
        "notes": ["a note"],
    }  # fmt: skip
    bench.summarise(record)
    s = record["summary"]
    assert s["dual"]["mean_recall"]["mean"] == pytest.approx(0.15)
    assert s["rerank"]["gain"]["mean"] == pytest.approx((0.02 + 0.01 + 0.03) / 3)
    assert s["cross"]["gain"]["mean"] == pytest.approx((-0.01 - 0.02 - 0.03) / 3)
    assert s["rerank"]["gain"]["low"] < s["rerank"]["gain"]["mean"] < s["rerank"]["gain"]["high"]
    text = bench.markdown(record)
    assert "text->image R@1/5/10 = 0.005 / 0.025 / 0.050" in text
    assert "| model | i2t R@1 | i2t R@5 | i2t R@10 | t2i R@1 | t2i R@5 | t2i R@10 | mean |" in text
    assert "minus the dual encoder (mean recall): +0.0200 [" in text and "- a note" in text


def test_the_fusion_benchmark_hands_flickr8k_to_the_retrieval_one(bench, monkeypatch) -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import multimodal
    finally:
        sys.path.remove(str(BENCHMARKS))
    seen = {}
    monkeypatch.setattr(bench, "main", lambda argv, command: seen.update(a=argv, c=command) or 0)
    assert multimodal.main(["--dataset", "flickr8k", "--seeds", "0", "--epochs", "1"]) == 0
    assert seen["a"] == ["--seeds", "0", "--epochs", "1"]
    assert seen["c"].startswith("python benchmarks/multimodal.py --dataset flickr8k")
