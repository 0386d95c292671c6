"""The multimodal benchmark's arithmetic: the t-interval of a mean, the gain of each fusion over
the better single modality of the same seed, and the target row (benchmarks/ is not a package:
the module is loaded from its file)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import multimodal

        yield multimodal
    finally:
        sys.path.remove(str(BENCHMARKS))


def runs(variant: str, accuracies: list[float]) -> list[dict]:
    return [{"variant": variant, "seed": s, "test_accuracy": a} for s, a in enumerate(accuracies)]


def test_the_interval_of_a_mean_uses_student_t(bench) -> None:
    mean, low, high = bench.interval([0.5, 0.7])
    half = 12.706 * math.sqrt(0.02) / math.sqrt(2)  # t(1) * sd / sqrt(n)
    assert mean == pytest.approx(0.6) and (low, high) == pytest.approx((0.6 - half, 0.6 + half))
    one = bench.interval([0.4])
    assert one[0] == 0.4 and math.isnan(one[1]) and math.isnan(one[2])


def test_the_gain_is_over_the_better_single_modality_of_each_seed(bench) -> None:
    record = {
        "runs": runs("audio", [0.60, 0.70, 0.50])
        + runs("image", [0.65, 0.60, 0.55])
        + runs("cross_attention", [0.75, 0.80, 0.60])
        + runs("late", [0.60, 0.65, 0.50])
    }
    bench.summarise(record)
    s = record["summary"]
    assert s["cross_attention"]["gain"] == pytest.approx((0.10 + 0.10 + 0.05) / 3)
    assert s["late"]["gain"] == pytest.approx((-0.05 - 0.05 - 0.05) / 3)
    best = (0.65 + 0.70 + 0.55) / 3
    assert s["cross_attention"]["relative"] == pytest.approx(s["cross_attention"]["gain"] / best)
    assert "gain" not in s["audio"] and s["audio"]["seeds"] == 3
    target = record["targets"][0]
    assert target["status"] == "met" and target["measured"].startswith("+0.0833")
    record["runs"] = runs("audio", [0.6]) + runs("image", [0.5]) + runs("cross_attention", [0.4])
    bench.summarise(record)
    assert record["targets"][0]["status"] == "not measured"  # one seed: no interval
