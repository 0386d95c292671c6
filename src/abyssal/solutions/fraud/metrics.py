"""Detection metrics for imbalanced fraud labels, as GADBench reports them (Tang et al., 2023).

- AUROC and AUPRC (average precision);
- macro-F1 at a decision threshold chosen on the validation split (the one that maximises it);
- Recall@K with K = the number of frauds in the split: the share of frauds among the K riskiest.
"""

from __future__ import annotations

import logging

import numpy as np

from abyssal.core.intervals import bootstrap_interval
from abyssal.core.optional import require

FEW_POSITIVES = 30
"""Below this many positives in a split, its metrics are too noisy to compare models on."""

log = logging.getLogger(__name__)


def ranking_metrics(y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """AUROC, AUPRC and Recall@K of scores ``score`` (higher = riskier) for 0/1 labels ``y``."""
    skm = require("sklearn.metrics", extra="fraud", purpose="detection metrics")
    y = np.asarray(y).astype(int)
    score = np.asarray(score, dtype=np.float64)
    if len(np.unique(y)) < 2:
        return {"auroc": float("nan"), "auprc": float("nan"), "recall_at_k": float("nan")}
    return {
        "auroc": float(skm.roc_auc_score(y, score)),
        "auprc": float(skm.average_precision_score(y, score)),
        "recall_at_k": recall_at_k(y, score),
    }


def recall_at_k(y: np.ndarray, score: np.ndarray, k: int | None = None) -> float:
    """Share of positives among the ``k`` highest scores' labels over all positives.

    Args:
        y: (n,) 0/1 labels.
        score: (n,) scores.
        k: how many to take; default the number of positives (then it equals precision@K).

    Example:
        >>> recall_at_k(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.1, 0.0]))
        0.5
    """
    positives = int(np.sum(y))
    k = positives if k is None else k
    if positives == 0 or k == 0:
        return float("nan")
    top = np.argsort(-score, kind="stable")[:k]
    return float(np.sum(y[top]) / positives)


def best_threshold(y: np.ndarray, score: np.ndarray) -> float:
    """The score threshold that maximises macro-F1 on ``(y, score)`` (ties: the lowest)."""
    candidates = np.unique(np.quantile(score, np.linspace(0.0, 1.0, 401)))
    if len(candidates) == 0:
        return 0.5
    f1s = [macro_f1(y, score, t) for t in candidates]
    return float(candidates[int(np.argmax(f1s))])


def macro_f1(y: np.ndarray, score: np.ndarray, threshold: float) -> float:
    """Macro-averaged F1 of the prediction ``score >= threshold``."""
    skm = require("sklearn.metrics", extra="fraud", purpose="detection metrics")
    pred = (np.asarray(score) >= threshold).astype(int)
    return float(skm.f1_score(np.asarray(y).astype(int), pred, average="macro", zero_division=0))


def split_metrics(
    y: np.ndarray, score: np.ndarray, masks: dict[str, np.ndarray], prefix: str = ""
) -> dict[str, float]:
    """Metrics on the ``val`` and ``test`` masks; the F1 threshold is fitted on ``val``.

    Returns:
        ``{prefix}val_auprc``, ``{prefix}test_auprc``, ... ``{prefix}threshold``, and the 95%
        bootstrap interval of the test AUPRC, ``{prefix}test_auprc_low`` / ``_high``.
    """
    out: dict[str, float] = {}
    threshold = best_threshold(y[masks["val"]], score[masks["val"]])
    for split in ("val", "test"):
        m = masks[split]
        for name, value in ranking_metrics(y[m], score[m]).items():
            out[f"{prefix}{split}_{name}"] = value
        out[f"{prefix}{split}_macro_f1"] = macro_f1(y[m], score[m], threshold)
    out[f"{prefix}threshold"] = threshold
    out.update(_auprc_interval(y[masks["test"]], score[masks["test"]], f"{prefix}test_auprc"))
    return out


def _auprc_interval(y: np.ndarray, score: np.ndarray, key: str) -> dict[str, float]:
    """``{key}_low`` and ``{key}_high``: the 95% bootstrap interval of AUPRC (none if undefined)."""
    skm = require("sklearn.metrics", extra="fraud", purpose="detection metrics")
    y = np.asarray(y).astype(int)
    low, high = bootstrap_interval(
        lambda a, b: float(skm.average_precision_score(a, b)), y, score, needs_both_classes=True
    )
    return {f"{key}_low": low, f"{key}_high": high} if np.isfinite([low, high]).all() else {}


def split_positives(
    y: np.ndarray, masks: dict[str, np.ndarray], where: str = "the data"
) -> dict[str, int]:
    """Positives in the ``val`` and ``test`` masks; a logged warning for each split with fewer
    than :data:`FEW_POSITIVES` (its AUROC, AUPRC and Recall@K are then very noisy).

    Returns:
        ``{"val_positives": ..., "test_positives": ...}``.

    Example:
        >>> split_positives(np.array([1, 0, 1]), {"val": np.array([1, 1, 0], bool),
        ...                                       "test": np.array([0, 0, 1], bool)})
        {'val_positives': 1, 'test_positives': 1}
    """
    out = {}
    for split in ("val", "test"):
        positives = int(np.sum(np.asarray(y)[masks[split]] == 1))
        out[f"{split}_positives"] = positives
        if positives < FEW_POSITIVES:
            log.warning(
                "%s: the %s split has only %d positive (fraudulent) examples, fewer than %d: "
                "its metrics are noisy; label more accounts or raise data.%s_frac",
                where,
                split,
                positives,
                FEW_POSITIVES,
                split,
            )
    return out
