"""Operating points and triage: thresholds chosen on validation data meet their targets on
held-out data within sampling error, the cost rule is the true minimum of the arithmetic, a
cost matrix moves single decisions as its arithmetic says, and kept points read back; a
multi-class model's accept threshold keeps its accepted accuracy on fresh data."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from abyssal.core.errors import AbyssalError, ConfigError, DataError
from abyssal.decide.points import (
    OperatingPoint,
    PointSpec,
    achieved,
    achieved_multiclass,
    choose,
    choose_multiclass,
    cost_optimal_action,
)
from abyssal.decide.store import load_points, point, save_points


def calibrated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores that are true probabilities: y ~ Bernoulli(s), 15 % positives on average."""
    rng = np.random.default_rng(seed)
    s = rng.beta(0.6, 3.4, n)
    return (rng.random(n) < s).astype(int), s


@pytest.mark.parametrize("target", [0.6, 0.8])
def test_a_precision_point_holds_on_held_out_data(target: float) -> None:
    yv, sv = calibrated(20_000, 0)
    p = choose(yv, sv, PointSpec("precision", target))
    assert p.achieved["precision"] >= target  # on the data it was chosen on
    yt, st = calibrated(20_000, 1)
    got = achieved(yt, st, p.review_at, p.block_at)
    flagged = got["block_share"] * len(yt)
    se = math.sqrt(target * (1 - target) / flagged)
    assert got["block_precision"] >= target - 4 * se  # within sampling error


@pytest.mark.parametrize("target", [0.5, 0.9])
def test_a_recall_point_holds_on_held_out_data(target: float) -> None:
    yv, sv = calibrated(20_000, 2)
    p = choose(yv, sv, PointSpec("recall", target))
    assert p.achieved["recall"] >= target
    yt, st = calibrated(20_000, 3)
    got = achieved(yt, st, p.review_at, p.block_at)
    se = math.sqrt(target * (1 - target) / yt.sum())
    assert got["recall"] >= target - 4 * se


def test_a_review_budget_sends_at_most_that_share_to_people() -> None:
    y, s = calibrated(5_000, 4)
    p = choose(y, s, PointSpec("review_budget", 0.1))
    assert p.block_at is None and p.achieved["review_share"] <= 0.1
    assert p.achieved["review_share"] > 0.099  # and fills it (no ties here)
    assert [p.decide(x).action for x in (p.review_at, p.review_at - 1e-9)] == [
        "review",
        "approve",
    ]


def brute_force_cost(y: np.ndarray, s: np.ndarray, costs: dict[str, float]) -> float:
    cands = [*sorted(set(s.tolist())), math.inf]
    best = math.inf
    for r, b in itertools.product(cands, cands):
        if b < r:
            continue
        got = achieved(y, s, None if r == math.inf else r, None if b == math.inf else b, costs)
        best = min(best, got["expected_cost"])
    return best


@pytest.mark.parametrize(
    "costs",
    [
        {"missed": 100.0, "review": 5.0, "false_block": 50.0},
        {"missed": 10.0, "review": 20.0, "false_block": 1.0},  # reviews dearer than blocks
        {"missed": 1.0, "review": 50.0, "false_block": 50.0},  # missing is cheap: approve all
    ],
)
def test_the_cost_point_is_the_minimum_of_the_cost_arithmetic(costs: dict[str, float]) -> None:
    y, s = calibrated(60, 5)
    s = np.round(s, 2)  # ties
    p = choose(y, s, PointSpec("cost", costs=costs))
    assert p.achieved["expected_cost"] == pytest.approx(brute_force_cost(y, s, costs))
    if costs["missed"] == 1.0:
        assert p.review_at is None and p.block_at is None


def test_a_cost_matrix_moves_a_decision_as_its_arithmetic_says() -> None:
    costs = {"missed": 100.0, "review": 5.0, "false_block": 50.0}
    # approve while p * 100 <= 5 (p <= 0.05); block once (1 - p) * 50 < 5 (p > 0.9)
    assert cost_optimal_action(0.05, costs) == "approve"
    assert cost_optimal_action(0.06, costs) == "review"
    assert cost_optimal_action(0.89, costs) == "review"
    assert cost_optimal_action(0.91, costs) == "block"
    # reviews at 40: review wins only where 40 < 100 p and 40 < 50 (1 - p), p in (0.4, 0.2):
    # nowhere, so the review band disappears
    dearer = {**costs, "review": 40.0}
    actions = {cost_optimal_action(p, dearer) for p in np.linspace(0, 1, 101)}
    assert actions == {"approve", "block"}
    assert cost_optimal_action(0.2, dearer) == "approve"
    assert cost_optimal_action(0.3, {**dearer, "false_block": 10.0}) == "block"


def test_triage_has_three_bands_and_says_why() -> None:
    y, s = calibrated(2_000, 6)
    p = choose(y, s, PointSpec("cost", costs={"missed": 100, "review": 5, "false_block": 50}))
    assert p.review_at is not None and p.block_at is not None and p.review_at < p.block_at
    d = p.decide(p.block_at)
    assert d.action == "block" and "block threshold" in d.reason and d.point == "cost"
    assert p.decide((p.review_at + p.block_at) / 2).action == "review"
    assert p.decide(0.0).action == "approve"
    with pytest.raises(DataError, match="probability"):
        p.decide(float("nan"))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (lambda: PointSpec("f1", 0.5), "unknown operating point 'f1'"),
        (lambda: PointSpec("precision", 1.5), r"in \(0, 1\]"),
        (lambda: PointSpec("cost", costs={"missed": 1}), "missing"),
        (lambda: PointSpec("cost", costs={"missed": 1, "review": -1, "false_block": 1}), ">= 0"),
    ],
)
def test_bad_specs_are_named(spec, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        spec()


def test_bad_data_and_unreachable_targets_are_named() -> None:
    with pytest.raises(DataError, match="0 or 1"):
        choose([0, 2], [0.1, 0.2], PointSpec("recall", 0.5))
    with pytest.raises(DataError, match="NaN"):
        choose([0, 1], [0.1, float("nan")], PointSpec("recall", 0.5))
    with pytest.raises(DataError, match="no positive"):
        choose([0, 0], [0.1, 0.2], PointSpec("recall", 0.5))
    with pytest.raises(DataError, match=r"best 0\.5"):
        choose([1, 0], [0.5, 0.5], PointSpec("precision", 0.9))


def test_kept_points_read_back_with_their_default(tmp_path) -> None:
    y, s = calibrated(1_000, 7)
    a = choose(y, s, PointSpec("precision", 0.7))
    b = choose(y, s, PointSpec("review_budget", 0.05, name="desk"))
    save_points("fraud:3", [a, b], default="desk", chosen_on="validation", home=tmp_path)
    record = load_points("fraud:3", home=tmp_path)
    assert record["default"] == "desk" and record["chosen_on"] == "validation"
    assert point("fraud:3", home=tmp_path) == b
    assert point("fraud:3", "precision-0.7", home=tmp_path) == a
    with pytest.raises(AbyssalError, match="no operating point 'x'"):
        point("fraud:3", "x", home=tmp_path)
    with pytest.raises(AbyssalError, match="no operating points yet"):
        load_points("fraud:4", home=tmp_path)
    with pytest.raises(ConfigError, match="pinned version"):
        save_points("fraud:production", [a], home=tmp_path)
    with pytest.raises(ConfigError, match="not one of"):
        save_points("fraud:3", [a], default="nope", home=tmp_path)


# -- multi-class: accept or review ---------------------------------------------------------------


def confident(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Six classes, confidences that are true probabilities: a prediction is right with
    probability equal to its confidence (uniform on [1/6, 1])."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(1 / 6, 1, n)
    pred = rng.integers(0, 6, n)
    wrong = (pred + rng.integers(1, 6, n)) % 6  # any other class
    labels = np.where(rng.random(n) < c, pred, wrong)
    names = np.array(["crazing", "inclusion", "patches", "pitted", "rolled", "scratches"])
    return names[labels], names[pred], c


@pytest.mark.parametrize("target", [0.8, 0.95])
def test_an_accuracy_point_holds_on_held_out_data(target: float) -> None:
    yv, pv, cv = confident(20_000, 10)
    p = choose_multiclass(yv, pv, cv, PointSpec("accuracy", target))
    assert p.multiclass and p.review_at is None and p.block_at is None
    assert p.achieved["accepted_accuracy"] >= target and p.achieved["target_reached"] is True
    # accepted accuracy from t is (1 + t) / 2 here: the lowest threshold reaching T is 2T - 1
    assert p.accept_at == pytest.approx(2 * target - 1, abs=0.03)
    yt, pt, ct = confident(20_000, 11)
    got = achieved_multiclass(yt, pt, ct, p.accept_at)
    se = math.sqrt(target * (1 - target) / (got["accept_share"] * len(yt)))
    assert got["accepted_accuracy"] >= target - 3 * se  # within sampling error
    assert got["accept_share"] + got["review_share"] == pytest.approx(1.0)
    assert got["accuracy"] == pytest.approx(7 / 12, abs=0.02)  # mean of U(1/6, 1)


def test_the_accuracy_point_is_the_lowest_threshold_that_reaches_it() -> None:
    # by confidence: right, right, wrong, right, right, wrong; accepted accuracy from each
    # threshold: 1, 1, 2/3, 3/4, 4/5, 4/6
    labels = ["a", "b", "c", "a", "b", "c"]
    preds = ["a", "b", "a", "a", "b", "a"]
    conf = [0.95, 0.9, 0.8, 0.7, 0.6, 0.5]
    assert choose_multiclass(labels, preds, conf, PointSpec("accuracy", 0.8)).accept_at == 0.6
    assert choose_multiclass(labels, preds, conf, PointSpec("accuracy", 0.75)).accept_at == 0.6
    assert choose_multiclass(labels, preds, conf, PointSpec("accuracy", 0.9)).accept_at == 0.9
    p = choose_multiclass(labels, preds, conf, PointSpec("accuracy", 0.8))
    assert p.achieved["accept_share"] == pytest.approx(5 / 6)
    assert p.achieved["accepted_accuracy"] == pytest.approx(0.8)
    assert p.achieved["accuracy"] == pytest.approx(4 / 6)


def test_an_unreachable_accuracy_accepts_nothing_and_says_so() -> None:
    p = choose_multiclass(["a", "b", "a"], ["b", "b", "a"], [0.9, 0.8, 0.7],
                          PointSpec("accuracy", 0.99))  # fmt: skip
    assert p.accept_at is None
    assert p.achieved["target_reached"] is False
    assert p.achieved["best_accepted_accuracy"] == pytest.approx(2 / 3)
    assert p.achieved["accept_share"] == 0.0 and p.achieved["review_share"] == 1.0
    assert p.achieved["accepted_accuracy"] is None
    d = p.decide(1.0)
    assert d.action == "review" and "nothing is accepted" in d.reason


def test_a_multiclass_review_budget_reviews_the_least_confident_share() -> None:
    y, pred, c = confident(5_000, 12)
    p = choose_multiclass(y, pred, c, PointSpec("review_budget", 0.1))
    assert 0.099 < p.achieved["review_share"] <= 0.1  # fills it (no ties here)
    assert p.accept_at == pytest.approx(np.quantile(c, 0.1), abs=1e-3)
    reviewed = c < p.accept_at
    assert c[reviewed].max() < c[~reviewed].min()  # the least confident are reviewed
    # ties at the threshold are accepted together: the budget is never exceeded
    tied = choose_multiclass(["a"] * 4, ["a", "b", "a", "b"], [0.5, 0.5, 0.5, 0.9],
                             PointSpec("review_budget", 0.5))  # fmt: skip
    assert tied.accept_at == 0.5 and tied.achieved["review_share"] == 0.0
    everything = choose_multiclass(y, pred, c, PointSpec("review_budget", 1.0))
    assert everything.accept_at is None and everything.achieved["review_share"] == 1.0


def test_a_multiclass_point_accepts_or_reviews_and_says_why() -> None:
    y, pred, c = confident(2_000, 13)
    p = choose_multiclass(y, pred, c, PointSpec("accuracy", 0.9))
    d = p.decide(p.accept_at)
    assert d.action == "accept" and d.point == "accuracy-0.9" and d.score == p.accept_at
    assert d.reason == (f"confidence {p.accept_at:.4g} >= accept threshold "
                        f"{p.accept_at:.4g} (accuracy-0.9)")  # fmt: skip
    below = p.decide(p.accept_at - 1e-6)
    assert below.action == "review" and "< accept threshold" in below.reason
    assert below.as_dict()["action"] == "review"
    with pytest.raises(DataError, match="probability"):
        p.decide(1.5)


@pytest.mark.parametrize("kind", ["precision", "recall", "cost"])
def test_binary_kinds_are_refused_for_a_multiclass_model(kind: str) -> None:
    costs = {"missed": 1, "review": 1, "false_block": 1} if kind == "cost" else {}
    spec = PointSpec(kind, 0.9, costs=costs)
    with pytest.raises(ConfigError, match="multi-class model takes accuracy, review_budget"):
        choose_multiclass(["a", "b"], ["a", "a"], [0.9, 0.6], spec)


def test_an_accuracy_point_is_refused_for_a_binary_model() -> None:
    with pytest.raises(ConfigError, match="binary classifier takes precision, recall"):
        choose([0, 1], [0.2, 0.8], PointSpec("accuracy", 0.9))
    with pytest.raises(ConfigError, match=r"in \(0, 1\]"):
        PointSpec("accuracy", 0.0)
    with pytest.raises(DataError, match="NaN or outside"):
        choose_multiclass(["a"], ["a"], [1.2], PointSpec("accuracy", 0.9))
    with pytest.raises(DataError, match="one row each"):
        choose_multiclass(["a", "b"], ["a"], [0.9, 0.8], PointSpec("accuracy", 0.9))


def test_multiclass_points_read_back_and_old_records_stay_binary(tmp_path) -> None:
    y, pred, c = confident(1_000, 14)
    a = choose_multiclass(y, pred, c, PointSpec("accuracy", 0.9))
    b = choose_multiclass(y, pred, c, PointSpec("review_budget", 0.2, name="desk"))
    save_points("defect:2", [a, b], home=tmp_path)
    assert load_points("defect:2", home=tmp_path)["points"] == [a, b]
    assert b.multiclass and b.as_dict()["accept_at"] == b.accept_at
    yb, sb = calibrated(500, 15)
    binary = choose(yb, sb, PointSpec("precision", 0.7))
    assert "accept_at" not in binary.as_dict() and not binary.multiclass  # as before
    old = {"name": "cost", "kind": "cost", "review_at": 0.3, "block_at": 0.8,
           "spec": {"kind": "cost"}, "achieved": {}}  # fmt: skip
    read = OperatingPoint.from_dict(old)
    assert read.accept_at is None and read.decide(0.9).action == "block"
