"""Group fairness metrics, their bootstrap intervals and per-group threshold mitigation."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from abyssal.core.errors import ConfigError, DataError
from abyssal.govern.fairness import (
    best_f1_threshold,
    decision_metrics,
    fit_thresholds,
    group_report,
    mitigate,
)

fairlearn_metrics = pytest.importorskip("fairlearn.metrics")


def _hand_made() -> pd.DataFrame:
    """At threshold 0.5: a flags 4 of 5 (both positives, 2 of 3 negatives); b flags 1 of 4."""
    return pd.DataFrame(
        {
            "label": [1, 0, 1, 0, 0, 1, 0, 0, 1],
            "score": [0.9, 0.2, 0.8, 0.6, 0.55, 0.7, 0.1, 0.4, 0.3],
            "segment": ["a"] * 5 + ["b"] * 4,
        }
    )


def _synthetic(seed: int, *, bias: float, n: int = 6000) -> pd.DataFrame:
    """Scores from logits: positives around 0, negatives around -3; ``bias`` lifts B's negatives."""
    rng = np.random.default_rng(seed)
    segment = np.where(rng.random(n) < 0.3, "B", "A")
    label = (rng.random(n) < 0.08).astype(int)
    logit = rng.normal(size=n) + 3.0 * label - 3.0 + bias * ((segment == "B") & (label == 0))
    return pd.DataFrame({"label": label, "score": 1 / (1 + np.exp(-logit)), "segment": segment})


def test_exact_values_on_a_hand_made_frame() -> None:
    report = group_report(_hand_made(), "segment", threshold=0.5, n_boot=200)
    a, b = report.group("a"), report.group("b")
    assert (a.count, a.positives, b.count, b.positives) == (5, 2, 4, 2)
    assert a.selection_rate.value == pytest.approx(0.8) and b.selection_rate.value == 0.25
    assert a.recall.value == 1.0 and b.recall.value == 0.5
    assert a.fpr.value == pytest.approx(2 / 3) and b.fpr.value == 0.0
    assert a.precision == 0.5 and b.precision == 1.0
    assert a.auprc == 1.0 and b.auprc == pytest.approx((1 + 2 / 3) / 2)  # b ranks 1, 0, 1, 0
    assert report.demographic_parity_difference.value == pytest.approx(0.55)
    assert report.demographic_parity_ratio.value == pytest.approx(0.25 / 0.8)
    assert report.tpr_difference.value == 0.5
    assert report.fpr_difference.value == pytest.approx(2 / 3)
    assert report.equalized_odds_difference.value == pytest.approx(2 / 3)
    assert report.overall["recall"] == 0.75 and report.overall["precision"] == 0.6
    assert report.threshold_rule == "given" and (report.rows, report.positives) == (9, 4)


def test_gaps_agree_with_fairlearn() -> None:
    frame = _synthetic(1, bias=1.0, n=2000)
    report = group_report(frame, "segment", threshold=0.3, n_boot=0)
    flag = (frame["score"] >= 0.3).astype(int)
    kw = {"y_true": frame["label"], "y_pred": flag, "sensitive_features": frame["segment"]}
    fm = fairlearn_metrics
    assert report.demographic_parity_difference.value == pytest.approx(
        fm.demographic_parity_difference(**kw)
    )
    assert report.demographic_parity_ratio.value == pytest.approx(fm.demographic_parity_ratio(**kw))
    assert report.equalized_odds_difference.value == pytest.approx(
        fm.equalized_odds_difference(**kw)
    )
    assert math.isnan(report.equalized_odds_difference.low)  # no resamples, no interval


def test_default_threshold_maximises_f1() -> None:
    label, score = np.array([0, 1, 1, 0, 1, 0]), np.array([0.1, 0.8, 0.6, 0.7, 0.3, 0.2])
    t = best_f1_threshold(label, score)
    f1 = lambda c: decision_metrics(label, score >= c)["f1"]  # noqa: E731
    assert t == 0.3 and all(f1(t) >= f1(c) for c in score)
    assert best_f1_threshold(np.zeros(3, int), np.array([0.2, 0.5, 0.1])) == 0.5
    frame = pd.DataFrame({"label": label, "score": score, "g": list("aabbcc")})
    report = group_report(frame, "g", n_boot=10)
    assert report.threshold == 0.3 and report.threshold_rule == "max F1 overall"


def test_biased_scores_show_a_gap_that_unbiased_ones_do_not() -> None:
    fair = group_report(_synthetic(0, bias=0.0), "segment", threshold=0.3, n_boot=300)
    biased = group_report(_synthetic(0, bias=1.5), "segment", threshold=0.3, n_boot=300)
    assert fair.fpr_difference.value < 0.02 and fair.fpr_difference.low < 0.02
    a, b = biased.group("A"), biased.group("B")
    assert b.fpr.low > a.fpr.high  # B's negatives are flagged far more often
    assert biased.equalized_odds_difference.low > fair.equalized_odds_difference.value
    assert biased.demographic_parity_difference.low > fair.demographic_parity_difference.high
    assert abs(a.recall.value - b.recall.value) < 0.1  # the positives are scored alike


def test_intervals_contain_their_point_estimates() -> None:
    report = group_report(_synthetic(2, bias=1.5), "segment", threshold=0.3, n_boot=500, seed=4)
    estimates = [report.demographic_parity_difference, report.demographic_parity_ratio]
    estimates += [report.equalized_odds_difference, report.fpr_difference]
    for g in report.groups:
        estimates += [g.selection_rate, g.recall, g.fpr]
    for e in estimates:
        assert e.low <= e.high and e.contains(e.value), e
    again = group_report(_synthetic(2, bias=1.5), "segment", threshold=0.3, n_boot=500, seed=4)
    assert again.to_dict() == report.to_dict()  # seeded


def test_a_group_without_positives_gets_nan_recall_and_a_note() -> None:
    frame = pd.DataFrame(
        {
            "label": [1, 0, 1, 0, 0, 0],
            "score": [0.9, 0.1, 0.4, 0.6, 0.7, 0.2],
            "g": ["x", "x", "y", "y", "z", "z"],
        }
    )
    report = group_report(frame, "g", threshold=0.5, n_boot=100)
    z = report.group("z")
    assert z.positives == 0 and math.isnan(z.recall.value) and z.fpr.value == 0.5
    assert report.tpr_difference.value == 1.0  # x: 1, y: 0; z left out
    assert any("'z' has no positives" in note for note in report.notes)
    assert "note: group 'z'" in report.summary()


def test_summary_and_dict() -> None:
    report = group_report(_hand_made(), "segment", threshold=0.5, n_boot=50)
    text = report.summary()
    assert "equalized odds difference" in text and "segment" in text and "95%" in text
    data = json.loads(json.dumps(report.to_dict()))
    assert data["groups"][0]["group"] == "a" and data["threshold"] == 0.5


def test_mitigation_fitted_on_validation_reduces_the_equalized_odds_gap() -> None:
    test, val = _synthetic(10, bias=1.5), _synthetic(11, bias=1.5)
    m = mitigate(test, "segment", val_frame=val, n_boot=200)
    assert m.fitted_on.startswith("the validation frame")
    assert m.thresholds["B"] > m.thresholds["A"]  # B's inflated scores need a higher bar
    before, after = m.before.equalized_odds_difference, m.after.equalized_odds_difference
    assert after.value < 0.6 * before.value
    assert m.after.fpr_difference.value < m.before.fpr_difference.value
    assert m.fit_gap["after"] < m.fit_gap["before"]
    shift = test["segment"].map(m.thresholds).to_numpy()
    assert (m.decisions == (test["score"].to_numpy() >= shift)).all()
    assert (m.decisions == (m.scores >= m.threshold)).all()
    for g in ("A", "B"):  # the shifted scores keep each group's order
        rows = (test["segment"] == g).to_numpy()
        assert (np.argsort(m.scores[rows], kind="stable")
                == np.argsort(test["score"].to_numpy()[rows], kind="stable")).all()  # fmt: skip
    assert set(m.cost) == {"f1", "precision", "recall", "auprc"}
    assert m.cost["f1"]["before"] == m.before.overall["f1"]
    assert m.cost["f1"]["before"] - m.cost["f1"]["after"] < 0.1
    assert "per group" in m.summary() and json.dumps(m.to_dict())


def test_mitigation_on_the_same_rows_respects_the_f1_budget() -> None:
    frame = _synthetic(12, bias=1.5)
    m = mitigate(frame, "segment", constraint="demographic_parity", max_f1_drop=0.02, n_boot=0)
    assert "optimistic" in m.fitted_on and m.before.threshold_rule.startswith("max F1")
    assert (
        m.after.demographic_parity_difference.value < m.before.demographic_parity_difference.value
    )
    assert m.cost["f1"]["after"] >= m.cost["f1"]["before"] - 0.02 - 1e-9
    unbiased = mitigate(_synthetic(12, bias=0.0), "segment", max_f1_drop=0.0, n_boot=0)
    assert unbiased.fit_gap["after"] <= unbiased.fit_gap["before"]


def test_fit_thresholds_keeps_the_single_threshold_when_nothing_beats_it() -> None:
    label = np.array([1, 0, 1, 0])
    score = np.array([0.9, 0.1, 0.9, 0.1])
    group = np.array(["a", "a", "b", "b"])
    chosen, gap = fit_thresholds(label, score, group, 0.5, "equalized_odds", 0.0)
    assert gap == {"before": 0.0, "after": 0.0}
    assert all(0.1 < t <= 0.9 for t in chosen.values())  # flags exactly the positives


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns="score"), "lacks column 'score'"),
        (lambda f: f.assign(label=[2, 0, 1, 0, 0, 1, 0, 0, 1]), "labels must be 0 or 1"),
        (lambda f: f.assign(score=[np.nan, *f["score"][1:]]), "row 1.*finite"),
        (lambda f: f.assign(segment=["a"] * 8 + ["c"]), r"group 'c' \(1 row\)"),
        (lambda f: f.assign(segment="a"), "at least two"),
        (lambda f: f.assign(segment=[None, *f["segment"][1:]]), "missing group value"),
    ],
)
def test_bad_frames_are_refused_with_what_was_wrong(change, message: str) -> None:
    with pytest.raises(DataError, match=message):
        group_report(change(_hand_made()), "segment", n_boot=10)


def test_bad_mitigation_arguments_are_refused() -> None:
    frame = _hand_made()
    with pytest.raises(ConfigError, match="constraint must be one of"):
        mitigate(frame, "segment", constraint="parity")  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"'b'.*not in the validation frame"):
        mitigate(frame, "segment", val_frame=frame.assign(segment=["a"] * 5 + ["c"] * 4))
    with pytest.raises(ConfigError, match="n_boot"):
        group_report(frame, "segment", n_boot=-1)
    many = pd.DataFrame(
        {"label": [0, 1] * 20, "score": np.linspace(0, 1, 40), "g": np.repeat(np.arange(20), 2)}
    )
    with pytest.raises(ConfigError, match="20 groups are too many"):
        mitigate(many, "g")
