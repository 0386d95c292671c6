"""Operating points of a classifier, chosen on validation data: three-way triage of a binary
classifier's scores, and accept-or-review of a multi-class classifier's predictions.

A score alone changes nothing in a bank's or a factory's work; a decision does. An operating
point turns scores into decisions with one or two thresholds:

- ``precision``: block from the lowest threshold whose precision on validation reaches the
  target (as many interceptions as that precision allows);
- ``recall``: block from the highest threshold whose recall reaches the target;
- ``review_budget``: send at most a share of items to people, the highest-scored ones, and
  block nothing automatically (``review`` from the threshold that fills the budget);
- ``cost``: the pair of thresholds (review from ``r``, block from ``b >= r``) with the lowest
  expected cost per item under a cost matrix: a missed positive costs ``missed``, a review
  costs ``review`` (the reviewer gets it right), a wrongly blocked negative costs
  ``false_block``, a blocked positive costs ``caught`` (usually 0).

A multi-class classifier (6 defect classes, a text's sentiment) has no one positive class;
its decision is selective classification: **accept** the predicted class when the model is
confident enough, otherwise **review** (a person decides). Its points
(:func:`choose_multiclass`) set one threshold ``accept_at`` on the predicted class's
probability (the confidence):

- ``accuracy``: the lowest threshold whose accepted items' accuracy on validation reaches the
  target (as many items accepted as that accuracy allows); none when no threshold reaches it
  (every item reviewed);
- ``review_budget``: review the lowest-confidence share of items, accept the rest.

Every point records what it achieves on the data it was chosen on (precision, recall,
review and block shares, expected cost; for multi-class points coverage and accepted
accuracy), so a reader sees the trade it makes.

Example:
    >>> import numpy as np
    >>> y = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    >>> s = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9])
    >>> p = choose(y, s, PointSpec("precision", target=1.0))
    >>> p.block_at, p.achieved["precision"], p.achieved["recall"]
    (0.7, 1.0, 0.75)
    >>> p.decide(0.75).action, p.decide(0.5).action
    ('block', 'approve')
    >>> m = choose_multiclass(["a", "b", "c", "a"], ["a", "b", "a", "a"], [0.9, 0.8, 0.6, 0.5],
    ...                       PointSpec("accuracy", target=1.0))
    >>> m.accept_at, m.achieved["accept_share"], m.decide(0.85).action
    (0.8, 0.5, 'accept')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from abyssal.core.errors import ConfigError, DataError

Kind = Literal["precision", "recall", "review_budget", "cost", "accuracy"]
KINDS: tuple[str, ...] = ("precision", "recall", "review_budget", "cost", "accuracy")
BINARY_KINDS: tuple[str, ...] = ("precision", "recall", "review_budget", "cost")
"""The kinds :func:`choose` takes: a binary classifier's score of the positive class."""
MULTICLASS_KINDS: tuple[str, ...] = ("accuracy", "review_budget")
"""The kinds :func:`choose_multiclass` takes: a multi-class classifier's confidence."""
MULTICLASS = "multiclass"
"""``spec["task"]`` of a point chosen by :func:`choose_multiclass`."""
COST_KEYS = ("missed", "review", "false_block", "caught")


@dataclass(frozen=True)
class PointSpec:
    """What an operating point must achieve.

    Args:
        kind: ``precision``, ``recall``, ``review_budget`` or ``cost`` (binary), ``accuracy``
            or ``review_budget`` (multi-class).
        target: the precision, recall or accepted accuracy to reach, or the largest share of
            items to review, in (0, 1]; unused by ``cost``.
        costs: ``cost`` only: ``missed``, ``review``, ``false_block`` (and optionally
            ``caught``), each >= 0, in any one currency.
        name: how the point is stored and asked for (default: the kind and target).
    """

    kind: str
    target: float = 0.0
    costs: Mapping[str, float] = field(default_factory=dict)
    name: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown operating point '{self.kind}'; known: {', '.join(KINDS)}")
        if self.kind == "cost":
            unknown = sorted(set(self.costs) - set(COST_KEYS))
            missing = [k for k in COST_KEYS[:3] if k not in self.costs]
            if unknown or missing:
                raise ConfigError(
                    f"a cost operating point needs costs {', '.join(COST_KEYS[:3])} (and "
                    f"optionally caught); missing {missing}, unknown {unknown}"
                )
            for k, v in self.costs.items():
                if not isinstance(v, int | float) or isinstance(v, bool) or not np.isfinite(v):
                    raise ConfigError(f"cost '{k}' must be a finite number, not {v!r}")
                if v < 0:
                    raise ConfigError(f"cost '{k}' must be >= 0, not {v}")
        elif not 0 < float(self.target) <= 1:
            raise ConfigError(f"{self.kind} target must be in (0, 1], not {self.target}")
        if not self.name:
            label = "cost" if self.kind == "cost" else f"{self.kind}-{self.target:g}"
            object.__setattr__(self, "name", label)


@dataclass(frozen=True)
class Decision:
    """What to do with one item, and why."""

    action: Literal["approve", "review", "block", "accept"]
    score: float
    point: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.action, "score": self.score, "point": self.point,
                "reason": self.reason}  # fmt: skip


@dataclass(frozen=True)
class OperatingPoint:
    """Two thresholds of a binary classifier's score (``review_at <= block_at``; ``None``
    where the action is never taken), or one of a multi-class classifier's confidence
    (``accept_at``; ``None``: nothing is accepted), and what they achieve on the data they
    were chosen on."""

    name: str
    kind: str
    review_at: float | None
    block_at: float | None
    spec: dict[str, Any]
    achieved: dict[str, Any]
    accept_at: float | None = None

    @property
    def multiclass(self) -> bool:
        """Whether the point decides a multi-class classifier's predictions (accept or
        review, from the predicted class's probability)."""
        return self.kind == "accuracy" or self.spec.get("task") == MULTICLASS

    def decide(self, score: float) -> Decision:
        """The action for one score: block from ``block_at``, review from ``review_at``,
        approve below both. A multi-class point takes the predicted class's probability:
        accept from ``accept_at``, review below it."""
        if not np.isfinite(score) or not 0 <= score <= 1:
            raise DataError(f"a score must be a probability in [0, 1], not {score!r}")
        if self.multiclass:
            return self._accept_or_review(score)
        if self.block_at is not None and score >= self.block_at:
            return Decision("block", score, self.name, f"score {score:.4g} >= block threshold "
                            f"{self.block_at:.4g} ({self.name})")  # fmt: skip
        if self.review_at is not None and score >= self.review_at:
            return Decision("review", score, self.name, f"score {score:.4g} >= review threshold "
                            f"{self.review_at:.4g} ({self.name})")  # fmt: skip
        return Decision("approve", score, self.name, f"score {score:.4g} below every threshold "
                        f"({self.name})")  # fmt: skip

    def _accept_or_review(self, confidence: float) -> Decision:
        if self.accept_at is None:
            return Decision("review", confidence, self.name, f"confidence {confidence:.4g}: "
                            f"nothing is accepted automatically ({self.name})")  # fmt: skip
        if confidence >= self.accept_at:
            return Decision("accept", confidence, self.name, f"confidence {confidence:.4g} >= "
                            f"accept threshold {self.accept_at:.4g} ({self.name})")  # fmt: skip
        return Decision("review", confidence, self.name, f"confidence {confidence:.4g} < "
                        f"accept threshold {self.accept_at:.4g} ({self.name})")  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "kind": self.kind,
            "review_at": self.review_at,
            "block_at": self.block_at,
            "spec": self.spec,
            "achieved": self.achieved,
        }
        if self.multiclass:  # binary records stay as they were
            out["accept_at"] = self.accept_at
        return out

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> OperatingPoint:
        return OperatingPoint(d["name"], d["kind"], d.get("review_at"), d.get("block_at"),
                              dict(d.get("spec") or {}), dict(d.get("achieved") or {}),
                              d.get("accept_at"))  # fmt: skip


def _check(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise DataError(f"labels {y.shape} and scores {s.shape} must be one row each per item")
    if len(y) == 0:
        raise DataError("no items to choose an operating point on")
    if not np.isin(y, (0, 1)).all():
        raise DataError("labels must be 0 or 1")
    bad = ~np.isfinite(s) | (s < 0) | (s > 1)
    if bad.any():
        raise DataError(f"{int(bad.sum())} scores are NaN or outside [0, 1]")
    if y.sum() == 0:
        raise DataError("no positive item: precision and recall are undefined")
    return y.astype(np.int64), s


def achieved(
    labels: Any, scores: Any, review_at: float | None, block_at: float | None,
    costs: Mapping[str, float] | None = None,
) -> dict[str, float | None]:  # fmt: skip
    """What thresholds achieve on labelled items: precision and recall of blocking (``block``
    = score >= ``block_at``), of flagging (review or block), the shares reviewed and blocked,
    and the expected cost per item under ``costs`` (reviews assumed right); a precision with
    nothing flagged is ``None``."""
    y, s = _check(labels, scores)
    n, pos = len(y), int(y.sum())
    block = s >= block_at if block_at is not None else np.zeros(n, bool)
    flag = s >= review_at if review_at is not None else block
    flag = flag | block
    review = flag & ~block
    out = {
        "items": float(n),
        "positives": float(pos),
        "block_share": float(block.mean()),
        "review_share": float(review.mean()),
        "block_precision": float(y[block].mean()) if block.any() else None,
        "block_recall": float(y[block].sum() / pos),
        "flag_precision": float(y[flag].mean()) if flag.any() else None,
        "recall": float(y[flag].sum() / pos),
        "precision": float(y[flag].mean()) if flag.any() else None,
    }
    if costs:
        out["expected_cost"] = float(_cost(y, block, review, costs).mean())
    return out


def _cost(y: np.ndarray, block: np.ndarray, review: np.ndarray, c: Mapping[str, float]) -> Any:
    approve = ~block & ~review
    return (
        approve * y * c["missed"]
        + review * c["review"]
        + block * (1 - y) * c["false_block"]
        + block * y * c.get("caught", 0.0)
    )


def actions_cost(labels: Any, actions: Any, costs: Mapping[str, float]) -> float:
    """Expected cost per item of given actions (``approve``, ``review``, ``block``, e.g. a
    rules baseline's) under the same cost matrix as a ``cost`` point, reviews assumed right.

    Example:
        >>> actions_cost([1, 0, 1], ["block", "review", "approve"],
        ...              {"missed": 90, "review": 3, "false_block": 30})
        31.0
    """
    y = np.asarray(labels).astype(np.int64)
    a = np.asarray(actions)
    if len(y) != len(a) or len(y) == 0:
        raise DataError("labels and actions need one value per item each")
    unknown = sorted(set(a.tolist()) - {"approve", "review", "block"})
    if unknown:
        raise DataError(f"unknown actions {unknown}; expected approve, review or block")
    spec = PointSpec("cost", costs=dict(costs))  # checks the costs
    return float(_cost(y, a == "block", a == "review", spec.costs).mean())


def choose(labels: Any, scores: Any, spec: PointSpec) -> OperatingPoint:
    """The operating point ``spec`` asks for, chosen on ``labels`` and ``scores`` (validation
    data; the same arrays a later check must not reuse).

    Raises:
        ConfigError: a kind for multi-class models (``accuracy``).
        DataError: bad arrays (shape, NaN, labels not 0/1, no positive item), or a target no
            threshold reaches (the message gives the best achievable).
    """
    if spec.kind not in BINARY_KINDS:
        raise ConfigError(
            f"a {spec.kind} operating point ('{spec.name}') is for multi-class models; a binary "
            f"classifier takes {', '.join(BINARY_KINDS)}"
        )
    y, s = _check(labels, scores)
    order = np.argsort(-s, kind="mergesort")
    ys, ss = y[order], s[order]
    last = np.r_[np.flatnonzero(np.diff(ss)), len(ss) - 1]  # last row of each distinct score
    tp = np.cumsum(ys)[last]
    k = last + 1  # items flagged when the threshold is that score
    thresholds = ss[last]
    precision, recall, share = tp / k, tp / y.sum(), k / len(y)
    review_at = block_at = None
    if spec.kind == "precision":
        ok = np.flatnonzero(precision >= spec.target - 1e-12)
        if ok.size == 0:
            raise DataError(f"no threshold reaches precision {spec.target:g}; best "
                            f"{precision.max():.4g}")  # fmt: skip
        block_at = float(thresholds[ok.max()])  # the lowest threshold that still reaches it
    elif spec.kind == "recall":
        ok = np.flatnonzero(recall >= spec.target - 1e-12)
        block_at = float(thresholds[ok.min()])  # the highest threshold that reaches it
    elif spec.kind == "review_budget":
        ok = np.flatnonzero(share <= spec.target + 1e-12)
        if ok.size == 0:
            raise DataError(f"a review budget of {spec.target:g} fits not even the items tied "
                            f"at the top score ({share[0]:.4g} of items)")  # fmt: skip
        review_at = float(thresholds[ok.max()])
    else:
        review_at, block_at = _cheapest(y, s, thresholds, spec.costs)
    return OperatingPoint(
        spec.name,
        spec.kind,
        review_at,
        block_at,
        {"kind": spec.kind, "target": spec.target, "costs": dict(spec.costs)},
        achieved(y, s, review_at, block_at, spec.costs or None),
    )


def _cheapest(
    y: np.ndarray, s: np.ndarray, thresholds: np.ndarray, costs: Mapping[str, float]
) -> tuple[float | None, float | None]:
    """The (review_at, block_at) pair of lowest expected cost; candidates are the distinct
    scores (at most 400, by quantile) plus "never" (above every score)."""
    cands = np.unique(thresholds)
    if cands.size > 400:
        cands = np.unique(np.quantile(s, np.linspace(0, 1, 400)))
    cands = np.r_[cands, np.inf]  # inf: the action is never taken
    # per candidate t: positives and negatives with score >= t
    sorted_s = np.sort(s)
    pos_s = np.sort(s[y == 1])
    n, p = len(s), len(pos_s)
    above = n - np.searchsorted(sorted_s, cands, side="left")
    pos_above = p - np.searchsorted(pos_s, cands, side="left")
    neg_above = above - pos_above
    c_miss, c_rev = costs["missed"], costs["review"]
    c_fb, c_caught = costs["false_block"], costs.get("caught", 0.0)
    # review from r, block from b >= r: flagged = above r, blocked = above b
    r = np.arange(len(cands))[:, None]
    b = np.arange(len(cands))[None, :]
    valid = cands[b] >= cands[r]
    missed = p - pos_above[r]
    reviewed = above[r] - above[b]
    total = (missed * c_miss + reviewed * c_rev + neg_above[b] * c_fb
             + pos_above[b] * c_caught)  # fmt: skip
    total = np.where(valid, total, np.inf)
    i, j = np.unravel_index(np.argmin(total), total.shape)
    as_value = lambda t: None if not np.isfinite(t) else float(t)  # noqa: E731
    review_at, block_at = as_value(cands[i]), as_value(cands[j])
    if review_at is not None and block_at is not None and review_at == block_at:
        review_at = None  # nothing falls between: no review band
    return review_at, block_at


def cost_optimal_action(probability: float, costs: Mapping[str, float]) -> str:
    """For a calibrated probability, the action of least expected cost (ties go to the milder
    action): approve costs ``p * missed``, review costs ``review``, block costs ``(1 - p) *
    false_block + p * caught``.

    Example:
        >>> cost_optimal_action(0.3, {"missed": 100, "review": 5, "false_block": 50})
        'review'
        >>> cost_optimal_action(0.02, {"missed": 100, "review": 5, "false_block": 50})
        'approve'
    """
    p = float(probability)
    options = [
        ("approve", p * costs["missed"]),
        ("review", costs["review"]),
        ("block", (1 - p) * costs["false_block"] + p * costs.get("caught", 0.0)),
    ]
    return min(options, key=lambda o: o[1])[0]


# -- multi-class classifiers: accept or review --------------------------------------------------


def _check_multiclass(
    labels: Any, predictions: Any, confidences: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Whether each prediction is right, and its confidence."""
    y, pred = np.asarray(labels, dtype=object), np.asarray(predictions, dtype=object)
    c = np.asarray(confidences, dtype=np.float64)
    if not y.shape == pred.shape == c.shape or y.ndim != 1:
        raise DataError(f"labels {y.shape}, predictions {pred.shape} and confidences {c.shape} "
                        "must be one row each per item")  # fmt: skip
    if len(y) == 0:
        raise DataError("no items to choose an operating point on")
    bad = ~np.isfinite(c) | (c < 0) | (c > 1)
    if bad.any():
        raise DataError(f"{int(bad.sum())} confidences are NaN or outside [0, 1]")
    return (y == pred).astype(np.int64), c


def achieved_multiclass(
    labels: Any, predictions: Any, confidences: Any, accept_at: float | None
) -> dict[str, Any]:
    """What accepting the predictions whose confidence (the predicted class's probability) is
    >= ``accept_at`` (``None``: none) achieves on labelled items: ``items``, ``accept_share``
    (the coverage), ``review_share``, ``accepted_accuracy`` (``None`` with nothing accepted)
    and ``accuracy`` (of every prediction).

    Example:
        >>> got = achieved_multiclass(["a", "b", "c"], ["a", "b", "a"], [0.9, 0.7, 0.6], 0.7)
        >>> got["accept_share"], got["accepted_accuracy"]
        (0.6666666666666666, 1.0)
    """
    right, c = _check_multiclass(labels, predictions, confidences)
    accept = c >= accept_at if accept_at is not None else np.zeros(len(c), bool)
    return {
        "items": float(len(c)),
        "accept_share": float(accept.mean()),
        "review_share": float(1 - accept.mean()),
        "accepted_accuracy": float(right[accept].mean()) if accept.any() else None,
        "accuracy": float(right.mean()),
    }


def choose_multiclass(
    labels: Any, predictions: Any, confidences: Any, spec: PointSpec
) -> OperatingPoint:
    """The accept-or-review point ``spec`` asks for, chosen on a multi-class classifier's
    validation predictions: ``labels`` and ``predictions`` (class names or indices) and
    ``confidences`` (the predicted class's probability), one per item.

    ``accuracy``: the lowest threshold whose accepted items' accuracy reaches the target (the
    most items accepted); when none does, nothing is accepted (``accept_at`` ``None``) and
    ``achieved`` says so (``target_reached`` false, ``best_accepted_accuracy``).
    ``review_budget``: review the lowest-confidence items, at most a share ``target`` of them
    (ties at the threshold are accepted together), and accept the rest.

    Raises:
        ConfigError: a kind for binary classifiers (precision, recall, cost).
        DataError: bad arrays (shapes, confidences NaN or outside [0, 1]).

    Example:
        >>> p = choose_multiclass(["a", "b", "b", "a"], ["a", "b", "a", "b"],
        ...                       [0.9, 0.8, 0.7, 0.6], PointSpec("review_budget", 0.5))
        >>> p.accept_at, p.decide(0.65).action
        (0.8, 'review')
    """
    if spec.kind not in MULTICLASS_KINDS:
        raise ConfigError(
            f"a {spec.kind} operating point ('{spec.name}') is for binary classifiers; a "
            f"multi-class model takes {', '.join(MULTICLASS_KINDS)} (accept or review)"
        )
    right, c = _check_multiclass(labels, predictions, confidences)
    extra: dict[str, Any] = {}
    if spec.kind == "accuracy":
        accept_at, best = _accuracy_threshold(right, c, spec.target)
        extra = {"target_reached": accept_at is not None, "best_accepted_accuracy": best}
    else:
        accept_at = _budget_threshold(c, spec.target)
    return OperatingPoint(
        spec.name,
        spec.kind,
        None,
        None,
        {"kind": spec.kind, "target": spec.target, "costs": {}, "task": MULTICLASS},
        {**achieved_multiclass(labels, predictions, c, accept_at), **extra},
        accept_at,
    )


def _accuracy_threshold(
    right: np.ndarray, c: np.ndarray, target: float
) -> tuple[float | None, float]:
    """The lowest distinct confidence whose accepted accuracy reaches ``target`` (``None``
    when none does), and the best accepted accuracy of any threshold."""
    order = np.argsort(-c, kind="mergesort")
    cs = c[order]
    last = np.r_[np.flatnonzero(np.diff(cs)), len(cs) - 1]  # last row of each distinct value
    accuracy = np.cumsum(right[order])[last] / (last + 1)  # accepted from that value up
    ok = np.flatnonzero(accuracy >= target - 1e-12)
    best = float(accuracy.max())
    return (float(cs[last[ok.max()]]) if ok.size else None), best


def _budget_threshold(c: np.ndarray, budget: float) -> float | None:
    """The highest threshold that sends at most a share ``budget`` of items (those below it)
    to review; ``None`` (review everything) when the budget is every item."""
    cands = np.r_[np.unique(c), np.inf]
    below = np.searchsorted(np.sort(c), cands, side="left") / len(c)
    pick = cands[np.flatnonzero(below <= budget + 1e-12).max()]  # the lowest value always fits
    return float(pick) if np.isfinite(pick) else None
