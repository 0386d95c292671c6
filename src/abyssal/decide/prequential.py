"""Prequential (test-then-train) evaluation of update policies on a time-ordered stream.

This is how a deployed model is experienced: each period's items are scored by the model in
service *before* their labels are known, and only then do the labels that have come back join
the training data. The stream is cut into periods (e.g. months); from the first cutoff on, each
policy keeps a model:

- ``frozen``: trained once at the first cutoff, never updated;
- ``retrain``: trained from scratch at every cutoff on every label known by then (full
  periodic retraining);
- ``continual``: trained from scratch at the first cutoff, then at every cutoff warm-started
  from its previous version (``train.init_from``) and fine-tuned on the labels that came back
  since, plus a replay sample of older labelled rows against forgetting.

Label delay: a row's label is known at a cutoff only when it has come back by then. A positive
comes back at its ``labelled_at`` time (a chargeback, an analyst's finding); a row counts as
negative only once its label window (``window_s``) has passed without a positive. Rows still
inside their window are left out of training (not counted as negatives). The same rule as
:func:`abyssal.decide.feedback.resolve_labels`.

Each period is scored with the graph or table of the period itself and ``history`` periods before
it, through :meth:`Solution.score_table`. Per period and policy the result holds the AUPRC, the
review share needed to intercept a target share of the period's positives (``recall_target``),
the interception at a fixed review share (``review_share``), and the compute the policy spent
(training seconds and rows trained on).

Example:
    >>> result = prequential("fraud", stream, period_s=30 * 86400,  # doctest: +SKIP
    ...                      overrides=["train.epochs=40"], replay_by="user_id")
    >>> result.table()  # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from abyssal.core.errors import ConfigError, DataError
from abyssal.core.home import using_home

POLICIES = ("frozen", "retrain", "continual")


@dataclass
class PrequentialResult:
    """Per policy, one row per scored period (see :meth:`frame`)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    scores: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    """``(policy, period)`` -> (the period's row positions in the stream, their scores)."""

    def frame(self) -> pd.DataFrame:
        """``policy, period, start, rows, positives, auprc, auroc, review_at_recall,
        intercepted_at_share, train_seconds, train_rows, version``."""
        return pd.DataFrame(self.rows)

    def summary(self) -> pd.DataFrame:
        """Per policy: mean AUPRC, mean review share at the recall target, mean interception at
        the review share, and total training seconds and rows."""
        f = self.frame()
        return (
            f.groupby("policy", sort=False)
            .agg(
                auprc=("auprc", "mean"),
                review_at_recall=("review_at_recall", "mean"),
                intercepted_at_share=("intercepted_at_share", "mean"),
                train_seconds=("train_seconds", "sum"),
                train_rows=("train_rows", "sum"),
                updates=("version", "nunique"),
            )
            .reset_index()
        )

    def to_json(self) -> str:
        return json.dumps({"settings": self.settings, "rows": self.rows}, indent=1, default=str)


def label_status(
    event_time: np.ndarray,
    label: np.ndarray,
    labelled_at: np.ndarray,
    cutoff: float,
    window_s: float,
    mature_only: bool = False,
) -> np.ndarray:
    """What is known of each row at ``cutoff``: 1 (a positive came back by then), 0 (its
    window passed with no positive) or -1 (still pending: not a negative yet). With
    ``mature_only`` a row inside its window is pending even when its positive came back
    early, so the rows trained on keep the stream's class balance (early positives alone
    would over-represent fraud among the newest rows).

    Example:
        >>> label_status(np.array([0, 0, 90]), np.array([1, 0, 0]), np.array([50, 0, 0]),
        ...              cutoff=100, window_s=30)
        array([ 1,  0, -1])
    """
    event_time = np.asarray(event_time, dtype=np.float64)
    positive = (np.asarray(label) == 1) & (np.asarray(labelled_at, dtype=np.float64) <= cutoff)
    expired = cutoff - event_time >= window_s
    out = np.full(len(event_time), -1, dtype=np.int64)
    out[expired] = 0
    out[positive] = 1
    if mature_only:
        out[~expired] = -1
    out[event_time >= cutoff] = -1  # not seen yet
    return out


def review_at_recall(labels: np.ndarray, scores: np.ndarray, recall: float) -> float:
    """The smallest share of items, taken from the highest score down, that holds ``recall``
    of the positives (NaN without positives)."""
    y = np.asarray(labels)[np.argsort(-np.asarray(scores), kind="stable")]
    if y.sum() == 0:
        return float("nan")
    need = int(np.ceil(recall * y.sum()))
    reached = int(np.searchsorted(np.cumsum(y), need)) + 1
    return reached / len(y)


def intercepted_at_share(labels: np.ndarray, scores: np.ndarray, share: float) -> float:
    """The share of positives among the top ``share`` of items by score (NaN without positives)."""
    y = np.asarray(labels)[np.argsort(-np.asarray(scores), kind="stable")]
    if y.sum() == 0:
        return float("nan")
    k = round(share * len(y))
    return float(y[:k].sum() / y.sum())


def _ranking(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    if len(np.unique(labels)) < 2:
        return float("nan"), float("nan")
    return float(average_precision_score(labels, scores)), float(roc_auc_score(labels, scores))


@dataclass
class _Stream:
    table: pd.DataFrame
    t: np.ndarray
    label: np.ndarray
    labelled_at: np.ndarray
    start: float
    period_s: float
    periods: int

    def bounds(self, p: int) -> tuple[float, float]:
        return self.start + p * self.period_s, self.start + (p + 1) * self.period_s


def _stream(
    table: pd.DataFrame, time_col: str, label_col: str, labelled_col: str | None, period_s: float
) -> _Stream:
    for col in (time_col, label_col):
        if col not in table.columns:
            raise DataError(f"the stream has no '{col}' column; it has {list(table.columns)}")
    if period_s <= 0:
        raise ConfigError(f"period_s must be > 0, got {period_s}")
    t = pd.to_numeric(table[time_col], errors="coerce").to_numpy(dtype=np.float64)
    if np.isnan(t).any():
        raise DataError(f"'{time_col}' must be Unix seconds; {int(np.isnan(t).sum())} rows are not")
    label = pd.to_numeric(table[label_col], errors="coerce").to_numpy(dtype=np.float64)
    if np.isnan(label).any() or not np.isin(label, (0, 1)).all():
        raise DataError(f"'{label_col}' must be 0/1 on every row of the stream")
    if labelled_col is not None and labelled_col in table.columns:
        labelled_at = pd.to_numeric(table[labelled_col], errors="coerce").to_numpy(np.float64)
        bad = (label == 1) & ~(labelled_at >= t)
        if bad.any():
            raise DataError(
                f"'{labelled_col}' must be a time at or after the event for every positive row; "
                f"{int(bad.sum())} are not"
            )
    else:
        labelled_at = t.copy()  # labels come back at once
    start = float(np.floor(t.min()))
    periods = int(np.ceil((t.max() + 1 - start) / period_s))
    return _Stream(table, t, label.astype(np.int64), labelled_at, start, period_s, periods)


def prequential(
    solution: str,
    table: pd.DataFrame,
    *,
    period_s: float,
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    continual_overrides: Sequence[str] = (),
    policies: Sequence[str] = POLICIES,
    data_key: str = "data.path",
    time_col: str = "timestamp",
    label_col: str = "label",
    labelled_col: str | None = "labelled_at",
    window_s: float = 0.0,
    mature_only: bool = False,
    warmup: int = 1,
    history: int = 1,
    replay: float = 0.25,
    replay_by: str | None = None,
    recall_target: float = 0.8,
    review_share: float = 0.02,
    seed: int = 0,
    work: str | Path,
    home: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> PrequentialResult:
    """Run the policies over ``table`` (see the module docstring).

    Args:
        solution: a solution with :meth:`score_table` that trains on a table file
            (``data_key`` names the config key of its path; fraud: ``data.path``).
        table: the stream: event time (Unix seconds), 0/1 label and, optionally, when each
            positive's label came back (``labelled_col``).
        period_s: the length of a period (e.g. 30 days).
        config, overrides: the training config for every model; ``continual_overrides`` are
            added for the warm-started updates (e.g. fewer epochs, a lower learning rate).
        window_s: the label window: a row without a positive counts as negative this long
            after its event.
        mature_only: train only on rows whose window has passed (see :func:`label_status`).
        warmup: periods of data before the first model is trained.
        history: earlier periods scored with each period (the graph's or table's context).
        replay: the share of older labelled rows (or ``replay_by`` groups) a continual update
            trains on beside the new ones.
        work: a folder for the training tables and the record.
        home: the abyssal home the versions are registered in.

    Raises:
        ConfigError: an unknown policy, a bad share or period count.
        DataError: a stream without its columns, non-numeric times, labels other than 0/1.
    """
    from abyssal.solutions import get_solution
    from abyssal.solutions.loading import load_model
    from abyssal.train.api import train

    unknown = [p for p in policies if p not in POLICIES]
    if unknown or not policies:
        raise ConfigError(f"policies must be some of {list(POLICIES)}, got {list(policies)}")
    if not 0 <= replay <= 1:
        raise ConfigError(f"replay must be a share in [0, 1], got {replay}")
    s = _stream(table, time_col, label_col, labelled_col, period_s)
    if not 1 <= warmup < s.periods:
        raise ConfigError(f"warmup={warmup} leaves no period to score of the stream's {s.periods}")
    if replay_by is not None and replay_by not in table.columns:
        raise DataError(f"replay_by: the stream has no '{replay_by}' column")
    solution_obj = get_solution(solution)
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda _line: None)
    rng = np.random.default_rng(seed)
    result = PrequentialResult(settings={
        "solution": solution, "period_s": period_s, "periods": s.periods, "warmup": warmup,
        "history": history, "window_s": window_s, "mature_only": mature_only, "replay": replay,
        "replay_by": replay_by,
        "overrides": list(overrides), "continual_overrides": list(continual_overrides),
        "recall_target": recall_target, "review_share": review_share, "rows": len(table),
    })  # fmt: skip
    current: dict[str, str] = {}  # policy -> version ref
    trained_until: dict[str, float] = {}  # policy -> cutoff of its last update
    initial: tuple[str, float] | None = None  # the first model (every policy starts from it)

    def fit(policy: str, rows: np.ndarray, extra: Sequence[str], name: str) -> tuple[str, float]:
        path = work / f"{name}.csv"
        part = s.table.iloc[rows].copy()
        part[label_col] = status_now[rows]
        part.to_csv(path, index=False)
        started = time.perf_counter()
        out = train(
            solution,
            config,
            [*overrides, *extra, f"{data_key}={path}"],
            model_name=f"prequential-{policy}",
            home=home,
        )
        assert out is not None  # a single process
        return out.version.ref, time.perf_counter() - started

    for p in range(warmup, s.periods):
        cutoff, end = s.bounds(p)
        status_now = label_status(s.t, s.label, s.labelled_at, cutoff, window_s, mature_only)
        known = np.flatnonzero(status_now >= 0)
        for policy in policies:
            seconds, n_rows = 0.0, 0
            if policy not in current:  # the first cutoff: one model for every policy
                if initial is None:
                    initial = fit("initial", known, (), f"initial-p{p}")
                (current[policy], seconds), n_rows = initial, len(known)
            elif policy == "retrain":
                current[policy], seconds = fit(policy, known, (), f"{policy}-p{p}")
                n_rows = len(known)
            elif policy == "continual":
                rows = _continual_rows(s, status_now, trained_until[policy], window_s,
                                       mature_only, replay, replay_by, rng)  # fmt: skip
                extra = [*continual_overrides, f"train.init_from={current[policy]}"]
                current[policy], seconds = fit(policy, rows, extra, f"{policy}-p{p}")
                n_rows = len(rows)
            if n_rows:
                trained_until[policy] = cutoff
            scored = np.flatnonzero((s.t >= cutoff - history * period_s) & (s.t < end))
            in_period = s.t[scored] >= cutoff
            with using_home(home):
                loaded = load_model(current[policy])
            scores = solution_obj.score_table(loaded, s.table.iloc[scored])[in_period]
            labels = s.label[scored][in_period]
            result.scores[(policy, p)] = (scored[in_period], scores)
            auprc, auroc = _ranking(labels, scores)
            row = {
                "policy": policy,
                "period": p,
                "start": int(cutoff),
                "rows": int(in_period.sum()),
                "positives": int(labels.sum()),
                "auprc": auprc,
                "auroc": auroc,
                "review_at_recall": review_at_recall(labels, scores, recall_target),
                "intercepted_at_share": intercepted_at_share(labels, scores, review_share),
                "train_seconds": round(seconds, 3),
                "train_rows": int(n_rows),
                "version": current[policy],
            }
            result.rows.append(row)
            say(
                f"period {p} {policy:9s} AUPRC {auprc:.4f}  review@{recall_target:.0%} recall "
                f"{row['review_at_recall']:.4f}  trained {n_rows} rows in {seconds:.1f} s"
            )
    (work / "prequential.json").write_text(result.to_json() + "\n")
    return result


def _continual_rows(
    s: _Stream,
    status: np.ndarray,
    since: float,
    window_s: float,
    mature_only: bool,
    replay: float,
    replay_by: str | None,
    rng: np.random.Generator,
) -> np.ndarray:
    """Rows whose labels came back since the last update, plus a replay sample of the older
    known rows (whole ``replay_by`` groups when given)."""
    before = label_status(s.t, s.label, s.labelled_at, since, window_s, mature_only)
    new = np.flatnonzero((status >= 0) & (before < 0))
    old = np.flatnonzero((status >= 0) & (before >= 0))
    if replay == 0 or len(old) == 0:
        return new
    groups = None if replay_by is None else s.table[replay_by].to_numpy()[old]
    kept = old[replay_sample(len(old), replay, rng, groups)]
    return np.sort(np.concatenate([new, kept]))


def replay_sample(
    n: int, share: float, rng: np.random.Generator, groups: np.ndarray | None = None
) -> np.ndarray:
    """Positions (in ``range(n)``) of a replay sample: a ``share`` of the rows, or with
    ``groups`` (one value per row) every row of a ``share`` of the groups (an account's
    history stays whole). What continual updates train on beside the new rows.

    Example:
        >>> replay_sample(6, 1 / 3, np.random.default_rng(0), np.array(list("aabbcc"))).size
        2
    """
    if groups is None:
        return np.sort(rng.choice(n, size=round(share * n), replace=False))
    unique = np.unique(groups)
    chosen = rng.choice(unique, size=round(share * len(unique)), replace=False)
    return np.flatnonzero(np.isin(groups, chosen))
