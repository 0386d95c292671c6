"""Group fairness of a binary model's held-out decisions, and per-group threshold mitigation.

:func:`group_report` audits a table of held-out predictions (``label`` 0/1, ``score`` the model's
probability of the positive class, one sensitive-attribute column) at one decision threshold;
an item is selected (flagged) when ``score >= threshold``. By default the threshold is the one
that maximises the F1 of the positive class over all rows (the candidates are the distinct scores;
ties: the lowest); pass the threshold the model was validated with to audit its real decisions.

- **Per group**: rows, positives, selection rate ``P(flag)``, recall (true-positive rate
  ``P(flag | y=1)``), false-positive rate ``P(flag | y=0)``, precision ``P(y=1 | flag)`` and
  AUPRC (average precision of the scores within the group). Rates come from Fairlearn's
  :class:`~fairlearn.metrics.MetricFrame` (Bird et al., *Fairlearn: A toolkit for assessing and
  improving fairness in AI*, 2020); a rate whose denominator is empty is undefined and reported as
  NaN (Fairlearn reports 0): a group without positives has no recall, one without negatives no
  false-positive rate, and such a group is left out of that rate's gap.
- **Across groups** (Fairlearn's definitions, ``method="between_groups"``): the demographic-parity
  difference ``max_g - min_g`` of the selection rate and its ratio ``min_g / max_g``; the
  equalized-odds difference ``max(TPR gap, FPR gap)`` (Hardt, Price and Srebro, *Equality of
  Opportunity in Supervised Learning*, NeurIPS 2016), where each gap is ``max_g - min_g``.
- **Intervals**: ``1 - alpha`` percentile-bootstrap intervals (Efron and Tibshirani, 1993) from
  ``n_boot`` resamples of the rows, stratified by group (each group keeps its size), at the same
  threshold. A gap is a ``max - min`` and so biased upward in resamples: when the true gap is near
  zero its interval may lie above the point estimate; read such an interval as "the gap is at most
  this", not as a test.

:func:`mitigate` post-processes the decisions with one threshold per group (Hardt et al.'s
post-processing, without randomisation). The rule: over a grid of per-group threshold tuples, take
those whose overall F1 on the fitting rows is at most ``max_f1_drop`` below the single threshold's
(a budget for the cost), and among them the one with the smallest constraint gap (equalized odds:
``max(TPR gap, FPR gap)``; demographic parity: the selection-rate gap); ties (within 1e-9) go to
the higher F1. The single threshold itself always qualifies, so the gap on the fitting rows never
grows. Why a budget and not "the smallest gap that keeps the overall recall": flagging everyone
keeps every recall at 1 with a gap of 0, and when one group's ROC curve lies below the other's
(its negatives score higher at every recall, the usual shape of a biased model) thresholds alone
equalise both rates only at such degenerate corners; the budget asks instead how much of the gap
a given loss of F1 buys. The grid holds each group's own distinct scores, or when there are more,
its score quantiles at evenly spaced levels, plus the single threshold; its size per group shrinks
with the number of groups so that it holds at most :data:`MAX_GRID` tuples. The thresholds are
fitted on ``val_frame`` when given (the audited frame then judges them fairly), else on the
audited frame itself (fitted and judged on the same rows: the gap after is optimistic). The
mitigated scores ``score - t_g + t`` are monotone within each group and select exactly the
mitigated decisions at the single threshold ``t``; their AUPRC against the original's is the
ranking cost.

Example:
    >>> frame = pd.DataFrame({"label": [1, 0, 1, 0, 1, 0, 0, 1],
    ...                       "score": [0.9, 0.2, 0.8, 0.6, 0.7, 0.1, 0.4, 0.3],
    ...                       "group": ["a", "a", "a", "a", "b", "b", "b", "b"]})
    >>> report = group_report(frame, "group", threshold=0.5, n_boot=50)
    >>> round(report.demographic_parity_difference.value, 3)
    0.5
    >>> round(report.equalized_odds_difference.value, 3)
    0.5
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from abyssal.core.display import fmt, table
from abyssal.core.errors import ConfigError, DataError
from abyssal.core.optional import require

Constraint = Literal["equalized_odds", "demographic_parity"]
CONSTRAINTS: tuple[str, ...] = ("equalized_odds", "demographic_parity")
DEFAULT_RESAMPLES = 1000
"""Bootstrap resamples per interval."""
MAX_GRID = 1_000_000
"""The most per-group threshold tuples :func:`mitigate` compares."""
MAX_PER_GROUP = 256
"""The most candidate thresholds per group."""
MIN_PER_GROUP = 5
"""Fewer candidates per group than this (too many groups) and :func:`mitigate` refuses."""
DEFAULT_F1_DROP = 0.05
"""How far below the single threshold's F1 (on the fitting rows) :func:`mitigate` may go."""
_TIE = 1e-9
_CHUNK = 4_000_000  # resampled cells per bootstrap batch (memory bound)


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its bootstrap interval (NaN where undefined)."""

    value: float
    low: float
    high: float

    def contains(self, x: float) -> bool:
        """Whether ``x`` lies within ``[low, high]``."""
        return bool(self.low <= x <= self.high)

    def text(self) -> str:
        """``0.1234 [0.1000, 0.1500]``."""
        return f"{fmt(self.value)} [{fmt(self.low)}, {fmt(self.high)}]"


@dataclass(frozen=True)
class GroupMetrics:
    """One group's decisions.

    Attributes:
        group: the group's value (as text).
        count: rows.
        positives: rows with ``label`` 1.
        selection_rate: share flagged, with its interval.
        recall: true-positive rate (NaN without positives), with its interval.
        fpr: false-positive rate (NaN without negatives), with its interval.
        precision: share of the flagged that are positive (NaN when none is flagged).
        auprc: average precision of the group's scores (NaN without both classes).
    """

    group: str
    count: int
    positives: int
    selection_rate: Estimate
    recall: Estimate
    fpr: Estimate
    precision: float
    auprc: float


@dataclass(frozen=True)
class FairnessReport:
    """What :func:`group_report` measured.

    Attributes:
        group_column: the sensitive attribute.
        threshold: the decision threshold (``score >= threshold`` flags).
        threshold_rule: how it was chosen (``"given"`` or ``"max F1 overall"``).
        rows: rows audited; ``positives``: of them with label 1.
        groups: one entry per group, sorted by group.
        demographic_parity_difference: selection-rate gap ``max - min`` over groups.
        demographic_parity_ratio: ``min / max`` selection rate.
        equalized_odds_difference: ``max(tpr_difference, fpr_difference)``.
        tpr_difference: recall gap; ``fpr_difference``: false-positive-rate gap.
        overall: ``precision``, ``recall``, ``f1``, ``selection_rate`` at the threshold and
            ``auprc`` of the scores, over all rows.
        n_boot: resamples; ``alpha``: 1 - the intervals' coverage; ``seed``: resampling seed.
        notes: groups whose rates are undefined, and why.
    """

    group_column: str
    threshold: float
    threshold_rule: str
    rows: int
    positives: int
    groups: tuple[GroupMetrics, ...]
    demographic_parity_difference: Estimate
    demographic_parity_ratio: Estimate
    equalized_odds_difference: Estimate
    tpr_difference: Estimate
    fpr_difference: Estimate
    overall: dict[str, float]
    n_boot: int
    alpha: float
    seed: int
    notes: tuple[str, ...] = ()

    def group(self, name: str) -> GroupMetrics:
        """The entry of group ``name``.

        Raises:
            KeyError: no such group (the groups are listed).
        """
        for g in self.groups:
            if g.group == str(name):
                return g
        raise KeyError(f"no group '{name}' ({', '.join(g.group for g in self.groups)})")

    def to_dict(self) -> dict[str, Any]:
        """The report as plain values (for JSON)."""
        return asdict(self)

    def summary(self) -> str:
        """A headline, a per-group table and the gaps with their intervals."""
        level = f"{1 - self.alpha:.0%}"
        head = (
            f"fairness by '{self.group_column}': {self.rows} rows, {self.positives} positive; "
            f"flag when score >= {fmt(self.threshold)} ({self.threshold_rule}); "
            f"{level} bootstrap intervals ({self.n_boot} resamples, stratified by group)"
        )
        headers = ["group", "rows", "positives", "selection", "recall (TPR)", "FPR"]
        headers += ["precision", "AUPRC"]
        rows = [
            [
                g.group,
                g.count,
                g.positives,
                g.selection_rate.text(),
                g.recall.text(),
                g.fpr.text(),
                g.precision,
                g.auprc,
            ]
            for g in self.groups
        ]
        gaps = [
            ["demographic parity difference", self.demographic_parity_difference.text()],
            ["demographic parity ratio", self.demographic_parity_ratio.text()],
            ["equalized odds difference", self.equalized_odds_difference.text()],
            ["  recall (TPR) gap", self.tpr_difference.text()],
            ["  FPR gap", self.fpr_difference.text()],
        ]
        o = self.overall
        overall = (
            f"overall: precision {fmt(o['precision'])}, recall {fmt(o['recall'])}, F1 "
            f"{fmt(o['f1'])}, AUPRC {fmt(o['auprc'])}"
        )
        lines = [head, table(headers, rows), table(["gap", "value [interval]"], gaps), overall]
        return "\n".join([*lines, *(f"note: {n}" for n in self.notes)])


@dataclass(frozen=True)
class Mitigation:
    """What :func:`mitigate` chose and what it cost.

    Attributes:
        constraint: ``"equalized_odds"`` or ``"demographic_parity"``.
        threshold: the single threshold ``t`` before mitigation.
        thresholds: group -> its own threshold ``t_g``.
        fitted_on: which rows the thresholds were fitted on.
        decisions: (n,) bool, the mitigated decisions (``score >= t_g``), in the frame's order.
        scores: (n,) the mitigated scores ``score - t_g + t`` (flag when ``>= t``).
        before: the report at ``t``; ``after``: at the per-group thresholds.
        cost: ``f1``, ``precision``, ``recall`` (of the decisions) and ``auprc`` (of the
            scores), each ``{"before": ..., "after": ...}``, on the audited frame.
        fit_gap: the constraint's gap on the fitting rows, ``{"before": ..., "after": ...}``.
    """

    constraint: str
    threshold: float
    thresholds: dict[str, float]
    fitted_on: str
    decisions: np.ndarray = field(repr=False)
    scores: np.ndarray = field(repr=False)
    before: FairnessReport
    after: FairnessReport
    cost: dict[str, dict[str, float]]
    fit_gap: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """Plain values (for JSON); the per-row decisions and scores are left out."""
        return {
            "constraint": self.constraint,
            "threshold": self.threshold,
            "thresholds": dict(self.thresholds),
            "fitted_on": self.fitted_on,
            "flagged": int(self.decisions.sum()),
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "cost": {k: dict(v) for k, v in self.cost.items()},
            "fit_gap": dict(self.fit_gap),
        }

    def summary(self) -> str:
        """The thresholds, the gaps before and after, and the cost in the main metrics."""
        ts = ", ".join(f"{g}: {fmt(t)}" for g, t in self.thresholds.items())
        head = (
            f"mitigation ({self.constraint}), thresholds fitted on {self.fitted_on}: "
            f"single {fmt(self.threshold)} -> per group {ts}"
        )
        b, a = self.before, self.after
        gaps = [
            [name, getattr(b, key).text(), getattr(a, key).text()]
            for name, key in (
                ("equalized odds difference", "equalized_odds_difference"),
                ("  recall (TPR) gap", "tpr_difference"),
                ("  FPR gap", "fpr_difference"),
                ("demographic parity difference", "demographic_parity_difference"),
            )
        ]
        groups = [
            [gb.group, gb.recall.text(), ga.recall.text(), gb.fpr.text(), ga.fpr.text()]
            for gb, ga in zip(b.groups, a.groups, strict=True)
        ]
        cost = [
            [k, v["before"], v["after"], v["after"] - v["before"]] for k, v in self.cost.items()
        ]
        return "\n".join(
            [
                head,
                table(["gap", "before", "after"], gaps),
                table(
                    ["group", "recall before", "recall after", "FPR before", "FPR after"], groups
                ),
                table(["metric", "before", "after", "change"], cost),
            ]
        )


# --- the report ----------------------------------------------------------------------------------


def group_report(
    frame: pd.DataFrame,
    group_column: str,
    *,
    threshold: float | None = None,
    n_boot: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    alpha: float = 0.05,
) -> FairnessReport:
    """Per-group rates and the demographic-parity and equalized-odds gaps, with intervals.

    Args:
        frame: one row per held-out item: ``label`` (0/1), ``score`` (probability of the positive
            class) and ``group_column``.
        group_column: the sensitive attribute.
        threshold: flag when ``score >= threshold``; default: the one maximising F1 overall.
        n_boot: bootstrap resamples (stratified by group); 0 leaves the intervals NaN.
        seed: the resampling seed.
        alpha: the intervals cover ``1 - alpha``.

    Returns:
        The report (see the module docstring for every definition).

    Raises:
        DataError: a missing column, a label other than 0/1, a missing or non-finite score, a
            missing group value (with its row), fewer than two groups, a group of fewer than
            two rows (named).
        ConfigError: ``n_boot < 0`` or ``alpha`` outside (0, 1).
    """
    if n_boot < 0 or not 0 < alpha < 1:
        raise ConfigError(f"need n_boot >= 0 and 0 < alpha < 1, got n_boot={n_boot}, alpha={alpha}")
    label, score, group = check_frame(frame, group_column)
    rule = "given"
    if threshold is None:
        threshold, rule = best_f1_threshold(label, score), "max F1 overall"
    return _report(label, score, group, float(threshold), rule, group_column, n_boot, seed, alpha)


def check_frame(
    frame: pd.DataFrame, group_column: str, what: str = "the frame"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(label, score, group)`` of a held-out frame, validated.

    Returns:
        (n,) int64 labels, (n,) float64 scores, (n,) group values as text.

    Raises:
        DataError: see :func:`group_report`; rows are 1-based.
    """
    lacking = [c for c in ("label", "score", group_column) if c not in frame.columns]
    if lacking:
        raise DataError(
            f"{what} lacks column '{lacking[0]}'; expected label (0/1), score (a probability) and "
            f"the group column; the columns are: {', '.join(map(str, frame.columns))}",
            column=lacking[0],
        )
    labels = pd.to_numeric(frame["label"], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isin(labels, (0.0, 1.0))
    if bad.any():
        row = int(np.argmax(bad))
        cell = frame["label"].iloc[row]
        raise DataError(f"{what}: labels must be 0 or 1, got {cell!r}", row=row + 1, column="label")
    score = pd.to_numeric(frame["score"], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(score)
    if bad.any():
        row = int(np.argmax(bad))
        cell = frame["score"].iloc[row]
        message = f"{what}: scores must be finite numbers, got {cell!r}"
        raise DataError(message, row=row + 1, column="score")
    missing = frame[group_column].isna().to_numpy()
    if missing.any():
        row = int(np.argmax(missing)) + 1
        raise DataError(f"{what}: missing group value", row=row, column=group_column)
    group = frame[group_column].astype(str).to_numpy(dtype=object)
    _check_groups(group, group_column, what)
    return labels.astype(np.int64), score, group


def _check_groups(group: np.ndarray, column: str, what: str) -> None:
    names, counts = np.unique(group, return_counts=True)
    if len(names) < 2:
        raise DataError(
            f"{what}: '{column}' has {len(names)} group(s) ({', '.join(names)}); a fairness "
            "comparison needs at least two",
            column=column,
        )
    small = [f"'{n}' ({c} row)" for n, c in zip(names, counts, strict=True) if c < 2]
    if small:
        raise DataError(
            f"{what}: group {', '.join(small)} of '{column}' has fewer than 2 rows: its rates "
            "mean nothing; merge it into another group or leave it out",
            column=column,
        )


def best_f1_threshold(label: np.ndarray, score: np.ndarray) -> float:
    """The score threshold (flag when ``score >= t``) maximising the positive class's F1.

    The candidates are the distinct scores; ties go to the lowest. Without positives: the
    highest score (F1 is 0 everywhere).

    Example:
        >>> best_f1_threshold(np.array([0, 1, 1, 0]), np.array([0.1, 0.8, 0.6, 0.7]))
        0.6
    """
    positives = int(label.sum())
    if positives == 0:
        return float(score.max())
    order = np.argsort(-score, kind="stable")
    s, y = score[order], label[order]
    last = np.r_[s[1:] != s[:-1], True]  # the last row of each run of equal scores
    tp, flagged = np.cumsum(y)[last], np.arange(1, len(y) + 1)[last]
    f1 = 2 * tp / (flagged + positives)
    best = np.flatnonzero(f1 == f1.max())[-1]  # candidates run high to low: last = lowest
    return float(s[last][best])


def _report(
    label: np.ndarray,
    score: np.ndarray,
    group: np.ndarray,
    threshold: float,
    rule: str,
    column: str,
    n_boot: int,
    seed: int,
    alpha: float,
) -> FairnessReport:
    flag = score >= threshold
    names = np.unique(group)
    table_ = _group_table(label, flag, group, names)
    boot = _bootstrap(label, flag, group, names, n_boot, seed, alpha)
    groups = tuple(
        GroupMetrics(
            group=str(name),
            count=int(table_.loc[name, "count"]),
            positives=int(label[group == name].sum()),
            selection_rate=_estimate(table_.loc[name, "selection_rate"], boot[("sel", name)]),
            recall=_estimate(table_.loc[name, "tpr"], boot[("tpr", name)]),
            fpr=_estimate(table_.loc[name, "fpr"], boot[("fpr", name)]),
            precision=float(table_.loc[name, "precision"]),
            auprc=_auprc(label[group == name], score[group == name]),
        )
        for name in names
    )
    sel, tpr, fpr = (table_[c].to_numpy(dtype=np.float64) for c in ("selection_rate", "tpr", "fpr"))
    tpr_gap, fpr_gap = _gap(tpr), _gap(fpr)
    return FairnessReport(
        group_column=column,
        threshold=threshold,
        threshold_rule=rule,
        rows=len(label),
        positives=int(label.sum()),
        groups=groups,
        demographic_parity_difference=_estimate(_gap(sel), boot["dp"]),
        demographic_parity_ratio=_estimate(_ratio(sel), boot["ratio"]),
        equalized_odds_difference=_estimate(np.nanmax([tpr_gap, fpr_gap]), boot["eo"]),
        tpr_difference=_estimate(tpr_gap, boot["tpr_gap"]),
        fpr_difference=_estimate(fpr_gap, boot["fpr_gap"]),
        overall={**decision_metrics(label, flag), "auprc": _auprc(label, score)},
        n_boot=n_boot,
        alpha=alpha,
        seed=seed,
        notes=_notes(label, group, names),
    )


def _group_table(
    label: np.ndarray, flag: np.ndarray, group: np.ndarray, names: np.ndarray
) -> pd.DataFrame:
    """Fairlearn's per-group rates, undefined ones (an empty denominator) as NaN."""
    fm = require("fairlearn.metrics", extra="govern", purpose="fairness metrics")
    skm = require("sklearn.metrics", extra="govern", purpose="fairness metrics")

    def precision(y_true: np.ndarray, y_pred: np.ndarray) -> float:
        return float(skm.precision_score(y_true, y_pred, zero_division=np.nan))

    frame = fm.MetricFrame(
        metrics={
            "count": fm.count,
            "selection_rate": fm.selection_rate,
            "tpr": fm.true_positive_rate,
            "fpr": fm.false_positive_rate,
            "precision": precision,
        },
        y_true=label,
        y_pred=flag.astype(np.int64),
        sensitive_features=pd.Series(group, name="group"),
    ).by_group.reindex(names)
    positives = pd.Series(label, dtype=np.int64).groupby(group).sum().reindex(names)
    frame.loc[positives.to_numpy() == 0, "tpr"] = np.nan
    frame.loc[(positives == frame["count"]).to_numpy(), "fpr"] = np.nan
    return frame.astype(np.float64)


def _gap(values: np.ndarray) -> float:
    """``max - min`` over the defined values (NaN with fewer than two)."""
    values = np.asarray(values, dtype=np.float64)
    defined = values[~np.isnan(values)]
    return float(defined.max() - defined.min()) if len(defined) >= 2 else float("nan")


def _ratio(values: np.ndarray) -> float:
    """``min / max`` (NaN when the largest is 0)."""
    top = float(np.max(values))
    return float(np.min(values)) / top if top > 0 else float("nan")


def _auprc(label: np.ndarray, score: np.ndarray) -> float:
    if len(np.unique(label)) < 2:
        return float("nan")
    skm = require("sklearn.metrics", extra="govern", purpose="fairness metrics")
    return float(skm.average_precision_score(label, score))


def decision_metrics(label: np.ndarray, flag: np.ndarray) -> dict[str, float]:
    """``precision``, ``recall``, ``f1`` (of the positive class) and ``selection_rate`` of 0/1
    decisions; precision is NaN when nothing is flagged, recall NaN without positives.

    Example:
        >>> decision_metrics(np.array([1, 1, 0, 0]), np.array([True, False, True, False]))["f1"]
        0.5
    """
    tp = float(np.sum(flag & (label == 1)))
    flagged, positives = float(np.sum(flag)), float(np.sum(label == 1))
    precision = tp / flagged if flagged else float("nan")
    recall = tp / positives if positives else float("nan")
    f1 = 2 * tp / (flagged + positives) if flagged + positives else float("nan")
    selection = flagged / max(len(label), 1)
    return {"precision": precision, "recall": recall, "f1": f1, "selection_rate": selection}


def _notes(label: np.ndarray, group: np.ndarray, names: np.ndarray) -> tuple[str, ...]:
    notes = []
    for name in names:
        y = label[group == name]
        if y.sum() == 0:
            notes.append(
                f"group '{name}' has no positives: its recall is undefined (NaN) and it is left "
                "out of the recall gap"
            )
        if y.sum() == len(y):
            notes.append(
                f"group '{name}' has no negatives: its false-positive rate is undefined (NaN) "
                "and it is left out of the FPR gap"
            )
    return tuple(notes)


# --- the bootstrap -------------------------------------------------------------------------------


def _bootstrap(
    label: np.ndarray,
    flag: np.ndarray,
    group: np.ndarray,
    names: np.ndarray,
    n_boot: int,
    seed: int,
    alpha: float,
) -> dict[Any, tuple[float, float]]:
    """Percentile intervals of every per-group rate and gap, resampling within each group."""
    rng = np.random.default_rng(seed)
    rates = {k: np.full((n_boot, len(names)), np.nan) for k in ("sel", "tpr", "fpr")}
    for j, name in enumerate(names):
        y, f = label[group == name], flag[group == name]
        for k, v in _resampled_rates(rng, y, f, n_boot).items():
            rates[k][:, j] = v
    stats: dict[Any, np.ndarray] = {}
    for k in rates:
        stats.update({(k, name): rates[k][:, j] for j, name in enumerate(names)})
    stats["tpr_gap"], stats["fpr_gap"] = _row_gaps(rates["tpr"]), _row_gaps(rates["fpr"])
    stats["dp"] = _row_gaps(rates["sel"])
    top = rates["sel"].max(axis=1, initial=-np.inf)
    with np.errstate(invalid="ignore", divide="ignore"):
        stats["ratio"] = np.where(top > 0, rates["sel"].min(axis=1, initial=np.inf) / top, np.nan)
    stats["eo"] = np.fmax(stats["tpr_gap"], stats["fpr_gap"])
    return {k: _percentiles(v, alpha) for k, v in stats.items()}


def _resampled_rates(
    rng: np.random.Generator, y: np.ndarray, f: np.ndarray, n_boot: int
) -> dict[str, np.ndarray]:
    """(n_boot,) selection rate, TPR and FPR of resamples of one group's rows (NaN if empty)."""
    n = len(y)
    out = {k: np.empty(n_boot) for k in ("sel", "tpr", "fpr")}
    step = max(1, _CHUNK // max(n, 1))
    for start in range(0, n_boot, step):
        rows = rng.integers(0, n, size=(min(step, n_boot - start), n))
        yy, ff = y[rows], f[rows]
        pos = yy.sum(axis=1)
        tp, fp = (ff & (yy == 1)).sum(axis=1), (ff & (yy == 0)).sum(axis=1)
        part = slice(start, start + len(rows))
        with np.errstate(invalid="ignore", divide="ignore"):
            out["sel"][part] = ff.mean(axis=1)
            out["tpr"][part] = np.where(pos > 0, tp / pos, np.nan)
            out["fpr"][part] = np.where(pos < n, fp / (n - pos), np.nan)
    return out


def _row_gaps(values: np.ndarray) -> np.ndarray:
    """Per row: ``max - min`` over the defined columns (NaN with fewer than two)."""
    missing = np.isnan(values)
    top = np.where(missing, -np.inf, values).max(axis=1)
    bottom = np.where(missing, np.inf, values).min(axis=1)
    return np.where((~missing).sum(axis=1) >= 2, top - bottom, np.nan)


def _percentiles(values: np.ndarray, alpha: float) -> tuple[float, float]:
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def _estimate(value: float, interval: tuple[float, float]) -> Estimate:
    return Estimate(float(value), *interval)


# --- mitigation ----------------------------------------------------------------------------------


def mitigate(
    frame: pd.DataFrame,
    group_column: str,
    *,
    constraint: Constraint = "equalized_odds",
    threshold: float | None = None,
    val_frame: pd.DataFrame | None = None,
    max_f1_drop: float = DEFAULT_F1_DROP,
    n_boot: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    alpha: float = 0.05,
) -> Mitigation:
    """Per-group thresholds with the smallest ``constraint`` gap that costs at most
    ``max_f1_drop`` of F1 on the fitting rows (the rule: the module docstring).

    Args:
        frame: the held-out rows to decide on and audit (as for :func:`group_report`).
        group_column: the sensitive attribute.
        constraint: ``"equalized_odds"`` or ``"demographic_parity"``.
        threshold: the single threshold ``t`` to start from; default: max F1 on the fitting rows.
        val_frame: rows to fit the thresholds on (every group of ``frame`` must be in it);
            default: ``frame`` itself.
        max_f1_drop: the F1 (absolute, on the fitting rows) the mitigation may cost, in [0, 1].
        n_boot, seed, alpha: the reports' intervals (as for :func:`group_report`).

    Returns:
        The thresholds, the mitigated decisions and scores, the reports before and after, and
        the cost in F1, precision, recall and AUPRC.

    Raises:
        ConfigError: an unknown constraint, ``max_f1_drop`` outside [0, 1], or too many groups
            for the threshold grid.
        DataError: as :func:`group_report`, for either frame; a group of ``frame`` absent from
            ``val_frame``.
    """
    if constraint not in CONSTRAINTS:
        raise ConfigError(f"constraint must be one of {', '.join(CONSTRAINTS)}, got '{constraint}'")
    if not 0 <= max_f1_drop <= 1:
        raise ConfigError(f"max_f1_drop must be in [0, 1], got {max_f1_drop}")
    label, score, group = check_frame(frame, group_column)
    fit = (label, score, group)
    fitted_on = f"the audited rows themselves ({len(label)}; optimistic)"
    if val_frame is not None:
        fit = check_frame(val_frame, group_column, "the validation frame")
        fitted_on = f"the validation frame ({len(fit[0])} rows)"
        _check_same_groups(group, fit[2], group_column)
    rule = "given"
    if threshold is None:
        threshold, rule = best_f1_threshold(fit[0], fit[1]), "max F1 on the fitting rows"
    t = float(threshold)
    thresholds, fit_gap = fit_thresholds(*fit, t, constraint, max_f1_drop)
    shift = pd.Series(group).map(thresholds).to_numpy(dtype=np.float64)
    shifted = score - shift + t
    report = lambda s, r: _report(  # noqa: E731
        label, s, group, t, r, group_column, n_boot, seed, alpha
    )
    before, after = report(score, rule), report(shifted, f"{rule}, per-group shift")
    return Mitigation(
        constraint=constraint,
        threshold=t,
        thresholds=thresholds,
        fitted_on=fitted_on,
        decisions=shifted >= t,
        scores=shifted,
        before=before,
        after=after,
        cost=_cost(before, after),
        fit_gap=fit_gap,
    )


def _check_same_groups(group: np.ndarray, fit_group: np.ndarray, column: str) -> None:
    unseen = sorted(set(group.tolist()) - set(fit_group.tolist()))
    if unseen:
        raise DataError(
            f"group(s) {', '.join(repr(g) for g in unseen)} of '{column}' are not in the "
            "validation frame: their thresholds cannot be fitted",
            column=column,
        )


def _cost(before: FairnessReport, after: FairnessReport) -> dict[str, dict[str, float]]:
    return {
        k: {"before": float(before.overall[k]), "after": float(after.overall[k])}
        for k in ("f1", "precision", "recall", "auprc")
    }


def fit_thresholds(
    label: np.ndarray,
    score: np.ndarray,
    group: np.ndarray,
    threshold: float,
    constraint: str,
    max_f1_drop: float = DEFAULT_F1_DROP,
) -> tuple[dict[str, float], dict[str, float]]:
    """Per-group thresholds by the rule of the module docstring, and the constraint's gap on
    these rows before (at the single ``threshold``) and after.

    Returns:
        ``({group: threshold}, {"before": gap, "after": gap})``.

    Raises:
        ConfigError: more groups than a grid of :data:`MIN_PER_GROUP` candidates each allows.
    """
    names = np.unique(group)
    per_group = min(MAX_PER_GROUP, math.floor(MAX_GRID ** (1 / len(names)) + 1e-9))
    if per_group < MIN_PER_GROUP:
        raise ConfigError(
            f"{len(names)} groups are too many for the per-group threshold grid (at most "
            f"{MAX_GRID} tuples, at least {MIN_PER_GROUP} candidates per group)"
        )
    curves = [_curve(label[group == g], score[group == g], threshold, per_group) for g in names]
    grid = _Grid(curves, constraint)
    start = grid.index_of([c.start for c in curves])
    feasible = grid.f1 >= grid.f1.flat[start] - max_f1_drop - _TIE
    gap = np.where(feasible, grid.gap, np.inf)
    f1 = np.where(gap <= gap.min() + _TIE, grid.f1, -np.inf)
    best = np.unravel_index(int(np.argmax(f1)), f1.shape)
    chosen = {str(g): float(c.candidates[i]) for g, c, i in zip(names, curves, best, strict=True)}
    return chosen, {"before": float(grid.gap.flat[start]), "after": float(grid.gap[best])}


@dataclass
class _Curve:
    """One group's counts at each candidate threshold (ascending)."""

    candidates: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    positives: int
    negatives: int
    start: int  # the index of the single threshold


def _curve(label: np.ndarray, score: np.ndarray, threshold: float, k: int) -> _Curve:
    distinct = np.unique(score)
    if len(distinct) > k - 1:
        distinct = np.unique(np.quantile(score, np.linspace(0.0, 1.0, k - 1)))
    candidates = np.unique(np.r_[distinct, threshold])
    pos, neg = np.sort(score[label == 1]), np.sort(score[label == 0])
    return _Curve(
        candidates=candidates,
        tp=len(pos) - np.searchsorted(pos, candidates, side="left"),  # score >= candidate
        fp=len(neg) - np.searchsorted(neg, candidates, side="left"),
        positives=int(label.sum()),
        negatives=int(len(label) - label.sum()),
        start=int(np.searchsorted(candidates, threshold)),
    )


class _Grid:
    """Overall F1 and the constraint's gap at every tuple of per-group candidates."""

    def __init__(self, curves: list[_Curve], constraint: str) -> None:
        dims = len(curves)
        shape = tuple(len(c.candidates) for c in curves)
        axis = lambda i, v: np.asarray(v, np.float64).reshape(  # noqa: E731
            [-1 if j == i else 1 for j in range(dims)]
        )
        tp = sum(axis(i, c.tp) for i, c in enumerate(curves))
        flagged = sum(axis(i, c.tp + c.fp) for i, c in enumerate(curves))
        positives = sum(c.positives for c in curves)
        self.f1 = np.broadcast_to(2 * tp / np.maximum(flagged + positives, 1), shape)
        self.gap = self._gap(curves, constraint, axis, shape)

    @staticmethod
    def _gap(
        curves: list[_Curve], constraint: str, axis: Any, shape: tuple[int, ...]
    ) -> np.ndarray:
        rates = {"sel": [], "tpr": [], "fpr": []}
        for i, c in enumerate(curves):
            n = c.positives + c.negatives
            rates["sel"].append(axis(i, (c.tp + c.fp) / n))
            if c.positives:
                rates["tpr"].append(axis(i, c.tp / c.positives))
            if c.negatives:
                rates["fpr"].append(axis(i, c.fp / c.negatives))
        spread = lambda vs: (  # noqa: E731
            np.broadcast_to(
                functools.reduce(np.maximum, vs) - functools.reduce(np.minimum, vs), shape
            )
            if len(vs) >= 2
            else np.zeros(shape)
        )
        if constraint == "demographic_parity":
            return spread(rates["sel"])
        return np.maximum(spread(rates["tpr"]), spread(rates["fpr"]))

    def index_of(self, index: list[int]) -> int:
        return int(np.ravel_multi_index(tuple(index), self.gap.shape))


__all__ = [
    "CONSTRAINTS",
    "Estimate",
    "FairnessReport",
    "GroupMetrics",
    "Mitigation",
    "best_f1_threshold",
    "check_frame",
    "decision_metrics",
    "fit_thresholds",
    "group_report",
    "mitigate",
]
