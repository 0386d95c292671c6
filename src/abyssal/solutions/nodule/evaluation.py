"""Scoring a nodule model: AUROC, sensitivity and specificity at two operating points, and the
error of the predicted attributes.

Operating points are chosen on the validation split and applied unchanged to the test split:
Youden's J (the threshold that maximises sensitivity + specificity - 1) and the highest threshold
whose validation sensitivity is at least 95 %. Their validation figures are optimistic by
construction; the test figures are the honest ones.

Example:
    >>> auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.4, 0.9]))
    0.75
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from abyssal.data.leakage import rank_auroc
from abyssal.solutions.nodule.data import NoduleData

SENSITIVITY_TARGET = 0.95


def auroc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve over the labelled rows (label -1 is left out; ties count half);
    NaN without both classes."""
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    keep = y >= 0
    return rank_auroc(s[keep], y[keep])


def rates(labels: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[float, float]:
    """(sensitivity, specificity) of calling ``score >= threshold`` malignant."""
    called = scores >= threshold
    pos, neg = labels == 1, labels == 0
    sens = float(called[pos].mean()) if pos.any() else float("nan")
    spec = float((~called[neg]).mean()) if neg.any() else float("nan")
    return sens, spec


def youden_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold that maximises sensitivity + specificity - 1."""
    best, best_j = 0.5, -np.inf
    for t in np.unique(scores):
        sens, spec = rates(labels, scores, t)
        if sens + spec - 1 > best_j:
            best, best_j = float(t), sens + spec - 1
    return best


def sensitivity_threshold(
    labels: np.ndarray, scores: np.ndarray, target: float = SENSITIVITY_TARGET
) -> float:
    """The highest threshold whose sensitivity is at least ``target``."""
    positives = np.sort(scores[labels == 1])
    if len(positives) == 0:
        return 0.5
    missable = int(np.floor((1 - target) * len(positives) + 1e-9))
    return float(positives[missable])


@torch.no_grad()
def score_cubes(model: torch.nn.Module, cubes: np.ndarray, batch_size: int) -> np.ndarray:
    """The model's outputs for uint8 cubes, batch by batch: (N, 1 + A) float32 on the CPU."""
    device = next(model.parameters()).device
    parts = []
    for i in range(0, len(cubes), batch_size):
        x = torch.from_numpy(cubes[i : i + batch_size]).to(device).unsqueeze(1).float() / 255.0
        parts.append(model(x).float().cpu())
    return torch.cat(parts).numpy() if parts else np.zeros((0, 1), dtype=np.float32)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function in float64 (float32 would round large logits to exactly 1)."""
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(x, dtype=np.float64), -700, 700)))


def fit_platt(
    logits: np.ndarray, labels: np.ndarray, *, ridge: float = 1e-2
) -> tuple[float, float]:
    """Scale ``a`` and offset ``b`` so that ``sigmoid(a * logit + b)`` fits the labels (Platt
    scaling): Newton's method with a backtracking line search on the log loss of the
    standardised logits, with a small ridge (so overconfident or separable logits cannot send
    the scale to infinity); ``(1, 0)`` without both classes or when the fitted scale is not
    positive (the ranking must not flip).

    Example:
        >>> logits = np.array([-4.0, -2.0, 0.0, 2.0, 4.0, 6.0])
        >>> a, b = fit_platt(logits, np.array([0, 0, 1, 0, 1, 1]))
        >>> 0 < a < 1
        True
    """
    x = np.asarray(logits, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if len(np.unique(y)) < 2 or not np.isfinite(x).all():
        return 1.0, 0.0
    center, spread = float(x.mean()), float(x.std()) or 1.0
    design = np.stack([(x - center) / spread, np.ones_like(x)], axis=1)

    def loss(w: np.ndarray) -> float:
        z = design @ w
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * ridge * w[0] ** 2)

    w = np.array([spread, center])  # the identity map, a = 1, b = 0
    current = loss(w)
    for _ in range(100):
        p = sigmoid(design @ w)
        grad = design.T @ (p - y) + ridge * np.array([w[0], 0.0])
        hess = (design * (p * (1 - p))[:, None]).T @ design + np.diag([ridge, 1e-9])
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-6 and loss(w - t * step) > current:
            t /= 2
        w, previous = w - t * step, current
        current = loss(w)
        if previous - current < 1e-10 * max(1.0, abs(current)):
            break
    a, b = float(w[0] / spread), float(w[1] - w[0] * center / spread)
    return (a, b) if a > 0 and np.isfinite([a, b]).all() else (1.0, 0.0)


def calibrate(model: torch.nn.Module, data: NoduleData, batch_size: int) -> tuple[float, float]:
    """Fit the model's malignancy calibration (:func:`fit_platt`) on the validation split's
    labelled nodules and store it in the model; a model already calibrated keeps its own.
    Returns the (scale, offset) in use."""
    net = getattr(model, "module", model)
    calibration = getattr(net, "calibration", None)
    if calibration is None:
        return 1.0, 0.0
    if calibration[2] > 0:
        return float(calibration[0]), float(calibration[1])
    rows = data.rows("val", labelled=True)
    was_training = model.training
    model.eval()
    try:
        logits = score_cubes(model, data.cubes[rows], batch_size)[:, 0]
    finally:
        model.train(was_training)
    a, b = fit_platt(logits, data.labels[rows])
    calibration.copy_(torch.tensor([a, b, 1.0], device=calibration.device))
    return a, b


def operating_metrics(
    val: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]
) -> dict[str, float]:
    """Thresholds from (val labels, scores), sensitivity and specificity on both splits."""
    out: dict[str, float] = {}
    thresholds = {
        "youden": youden_threshold(*val),
        "sens95": sensitivity_threshold(*val),
    }
    for point, t in thresholds.items():
        out[f"threshold_{point}"] = t
        for split, (y, s) in (("val", val), ("test", test)):
            sens, spec = rates(y, s, t)
            out[f"{split}_sensitivity_{point}"] = sens
            out[f"{split}_specificity_{point}"] = spec
    return out


def evaluate_nodule(model: torch.nn.Module, data: NoduleData, batch_size: int) -> dict[str, float]:
    """``val_*`` and ``test_*`` metrics of a classifier, operating points, attribute errors."""
    was_training = model.training
    model.eval()
    names = list(getattr(getattr(model, "module", model), "nodule_spec", {}).get("attributes", []))
    metrics: dict[str, float] = {"train_nodules": len(data.rows("train", labelled=True))}
    pairs = {}
    try:
        for split in ("val", "test"):
            rows = data.rows(split)
            out = score_cubes(model, data.cubes[rows], batch_size)
            labels = data.labels[rows]
            scores = sigmoid(out[:, 0])
            known = labels >= 0
            pairs[split] = (labels[known], scores[known])
            metrics[f"{split}_auroc"] = auroc(labels, out[:, 0])  # logits: no saturated ties
            metrics[f"{split}_accuracy"] = float(((scores[known] >= 0.5) == labels[known]).mean())
            metrics[f"{split}_nodules"] = int(known.sum())
            truth = data.attribute_values(rows, names)
            metrics.update(_attribute_errors(out[:, 1:], truth, names, split))
    finally:
        model.train(was_training)
    metrics.update(operating_metrics(pairs["val"], pairs["test"]))
    return metrics


def _attribute_errors(
    predicted: np.ndarray, truth: np.ndarray, names: list[str], split: str
) -> dict[str, float]:
    """Mean absolute error per attribute over the nodules that have it (diameter in mm)."""
    out = {}
    if predicted.shape[1] != len(names) or not names:
        return out
    for j, name in enumerate(names):
        known = ~np.isnan(truth[:, j])
        if known.any():
            key = "diameter_mae_mm" if name == "diameter_mm" else f"{name}_mae"
            out[f"{split}_{key}"] = float(np.abs(predicted[known, j] - truth[known, j]).mean())
    return out


def restoration_metrics(model: torch.nn.Module, task: Any, data: NoduleData) -> dict[str, float]:
    """Models Genesis: mean squared restoration error on the val and test splits (each batch
    corrupted from its own fixed seed, so the figure repeats)."""
    was_training = model.training
    model.eval()
    out = {}
    device = next(model.parameters()).device
    size = task.cfg.data.eval_batch_size
    try:
        with torch.no_grad():
            for split in ("val", "test"):
                rows = data.rows(split)
                errors = []
                for i in range(0, len(rows), size):
                    part = rows[i : i + size]
                    batch = task.batch_of(part, torch.zeros(len(part), 0), i).to(device)
                    errors.append(task.validation_step(model, batch)["error"].cpu().numpy())
                out[f"{split}_restoration_mse"] = float(np.concatenate(errors).mean())
    finally:
        model.train(was_training)
    return out
