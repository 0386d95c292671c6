"""Metrics of held-out predictions, computed on index arrays so the bootstrap can call them
thousands of times: binary ones on scores (AUROC, AUPRC, ...), class ones on predicted labels.

A :class:`Scored` holds one model's predictions on one task's items, as
:meth:`Solution.held_out` returns them: binary (``label`` 0/1 and ``score``) or several classes
(``label`` and ``prediction`` as class codes).

Example:
    >>> import numpy as np
    >>> s = Scored.binary("abcd", np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.4, 0.9]))
    >>> METRICS["auroc"].compute(s, np.arange(4))
    0.75
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from abyssal.core.errors import ConfigError, DataError


@dataclass(frozen=True)
class Scored:
    """One model's predictions on one task: items in a fixed order.

    Attributes:
        ids: (n,) item ids (strings), unique.
        labels: (n,) int codes: 0/1 for a binary task, else indices into ``classes``.
        scores: (n,) probability of the positive class (binary tasks), else ``None``.
        predictions: (n,) int codes of the predicted class (class tasks), else ``None``.
        classes: class names for the codes (``("0", "1")`` for binary tasks).
        threshold: score at or above which a binary prediction is positive.
    """

    ids: np.ndarray
    labels: np.ndarray
    scores: np.ndarray | None
    predictions: np.ndarray | None
    classes: tuple[str, ...]
    threshold: float = 0.5

    @property
    def is_binary(self) -> bool:
        """Whether the task is binary (scores of the positive class)."""
        return self.scores is not None

    @property
    def n(self) -> int:
        return len(self.ids)

    def predicted(self) -> np.ndarray:
        """(n,) predicted class codes (binary: score >= threshold)."""
        if self.scores is not None:
            return (self.scores >= self.threshold).astype(np.int64)
        assert self.predictions is not None
        return self.predictions

    @staticmethod
    def from_frame(frame: Any, *, threshold: float = 0.5, where: str = "") -> Scored:
        """From :meth:`Solution.held_out`'s frame (``id, label, score`` or ``id, label,
        prediction[, probability]``); checks ids are unique and scores finite in [0, 1]."""
        columns = set(frame.columns)
        if not {"id", "label"} <= columns or not ({"score"} & columns or {"prediction"} & columns):
            raise DataError(
                f"{where}: held-out predictions need columns id, label and score (binary) or "
                f"prediction; got {sorted(columns)}"
            )
        ids = frame["id"].astype(str).to_numpy()
        if len(set(ids.tolist())) != len(ids):
            raise DataError(f"{where}: held-out item ids are not unique")
        if "score" in columns:
            scores = frame["score"].to_numpy(dtype=np.float64)
            bad = ~np.isfinite(scores) | (scores < 0) | (scores > 1)
            if bad.any():
                raise DataError(
                    f"{where}: {int(bad.sum())} held-out scores are NaN or outside [0, 1] "
                    f"(first: item {ids[int(np.flatnonzero(bad)[0])]})"
                )
            labels = frame["label"].to_numpy()
            try:
                return Scored.binary(ids, labels, scores, threshold=threshold)
            except DataError as exc:
                raise DataError(f"{where}: {exc}") from None
        names = sorted({str(v) for v in frame["label"]} | {str(v) for v in frame["prediction"]})
        code = {name: i for i, name in enumerate(names)}
        labels = np.array([code[str(v)] for v in frame["label"]], dtype=np.int64)
        predictions = np.array([code[str(v)] for v in frame["prediction"]], dtype=np.int64)
        return Scored(ids, labels, None, predictions, tuple(names), threshold)

    @staticmethod
    def binary(ids: Sequence[Any], labels: Any, scores: Any, *, threshold: float = 0.5) -> Scored:
        """A binary task's predictions: labels 0/1, scores of class 1."""
        labels = np.asarray(labels).astype(np.int64)
        if not np.isin(labels, (0, 1)).all():
            raise DataError("binary labels must be 0 or 1")
        return Scored(
            np.asarray([str(i) for i in ids]),
            labels,
            np.asarray(scores, dtype=np.float64),
            None,
            ("0", "1"),
            threshold,
        )

    def take(self, rows: np.ndarray) -> Scored:
        """The items at ``rows``, in that order."""
        pick = lambda a: None if a is None else a[rows]  # noqa: E731
        return Scored(
            self.ids[rows],
            self.labels[rows],
            pick(self.scores),
            pick(self.predictions),
            self.classes,
            self.threshold,
        )


# -- the metrics ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """A metric of a :class:`Scored` restricted to some rows.

    Attributes:
        name: its name in suite files and leaderboards.
        title: how tables head it.
        higher_is_better: the direction leaderboards rank by.
        binary_only: needs scores (AUROC, AUPRC, Brier, sensitivity, ...).
        both_classes: undefined unless both classes occur among the rows (AUROC, AUPRC).
    """

    name: str
    title: str
    fn: Callable[[Scored, np.ndarray], float]
    higher_is_better: bool = True
    binary_only: bool = False
    both_classes: bool = False

    def compute(self, scored: Scored, rows: np.ndarray) -> float:
        """The metric on ``scored``'s items at ``rows`` (NaN where it is undefined)."""
        if self.binary_only and not scored.is_binary:
            raise ConfigError(
                f"metric '{self.name}' needs scores of a binary task; this task has "
                f"{len(scored.classes)} classes (use accuracy or macro_f1)"
            )
        if len(rows) == 0:
            return float("nan")
        if self.both_classes and np.unique(scored.labels[rows]).size < 2:
            return float("nan")
        return float(self.fn(scored, rows))


def _auroc(s: Scored, rows: np.ndarray) -> float:
    """Mann-Whitney U over average ranks (ties count one half)."""
    from scipy.stats import rankdata

    y, x = s.labels[rows], s.scores[rows]  # type: ignore[index]
    ranks = rankdata(x)
    pos = y == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    return (ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)


def _auprc(s: Scored, rows: np.ndarray) -> float:
    """Average precision (the step-wise area, as scikit-learn's ``average_precision_score``)."""
    y, x = s.labels[rows], s.scores[rows]  # type: ignore[index]
    order = np.argsort(-x, kind="mergesort")
    y, x = y[order], x[order]
    distinct = np.r_[np.flatnonzero(np.diff(x)), len(x) - 1]  # last row of each tied score
    tp = np.cumsum(y)[distinct]
    fp = (distinct + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _counts(s: Scored, rows: np.ndarray) -> tuple[int, int, int, int]:
    y, p = s.labels[rows], s.predicted()[rows]
    tp = int(((p == 1) & (y == 1)).sum())
    fp = int(((p == 1) & (y == 0)).sum())
    fn = int(((p == 0) & (y == 1)).sum())
    tn = int(((p == 0) & (y == 0)).sum())
    return tp, fp, fn, tn


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _sensitivity(s: Scored, rows: np.ndarray) -> float:
    tp, _, fn, _ = _counts(s, rows)
    return _ratio(tp, tp + fn)


def _specificity(s: Scored, rows: np.ndarray) -> float:
    _, fp, _, tn = _counts(s, rows)
    return _ratio(tn, tn + fp)


def _f1(s: Scored, rows: np.ndarray) -> float:
    tp, fp, fn, _ = _counts(s, rows)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def _accuracy(s: Scored, rows: np.ndarray) -> float:
    return float(np.mean(s.predicted()[rows] == s.labels[rows]))


def _per_class_f1(s: Scored, rows: np.ndarray) -> np.ndarray:
    y, p = s.labels[rows], s.predicted()[rows]
    k = len(s.classes)
    tp = np.bincount(y[p == y], minlength=k).astype(np.float64)
    support = np.bincount(y, minlength=k)
    predicted = np.bincount(p, minlength=k)
    present = (support + predicted) > 0
    return (2 * tp / np.maximum(support + predicted, 1))[present]


def _macro_f1(s: Scored, rows: np.ndarray) -> float:
    return float(np.mean(_per_class_f1(s, rows)))


def _balanced_accuracy(s: Scored, rows: np.ndarray) -> float:
    y, p = s.labels[rows], s.predicted()[rows]
    recalls = [np.mean(p[y == c] == c) for c in np.unique(y)]
    return float(np.mean(recalls))


def _brier(s: Scored, rows: np.ndarray) -> float:
    return float(np.mean((s.scores[rows] - s.labels[rows]) ** 2))  # type: ignore[index]


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("auroc", "AUROC", _auroc, binary_only=True, both_classes=True),
        Metric("auprc", "AUPRC", _auprc, binary_only=True, both_classes=True),
        Metric("accuracy", "accuracy", _accuracy),
        Metric("balanced_accuracy", "balanced accuracy", _balanced_accuracy),
        Metric("macro_f1", "macro-F1", _macro_f1),
        Metric("f1", "F1", _f1, binary_only=True),
        Metric("sensitivity", "sensitivity", _sensitivity, binary_only=True),
        Metric("specificity", "specificity", _specificity, binary_only=True),
        Metric("brier", "Brier score", _brier, higher_is_better=False, binary_only=True),
    )
}
"""Every metric a suite may name."""


def metric(name: str) -> Metric:
    """The metric ``name``; an unknown name is an error listing the known ones."""
    try:
        return METRICS[name]
    except KeyError:
        raise ConfigError(f"unknown metric '{name}'; known: {', '.join(METRICS)}") from None
