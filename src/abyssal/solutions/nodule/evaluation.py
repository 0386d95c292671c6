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
    scaling, :func:`fit_logistic` with the logit alone); ``(1, 0)`` without both classes or when
    the fitted scale is not positive (the ranking must not flip).

    Example:
        >>> logits = np.array([-4.0, -2.0, 0.0, 2.0, 4.0, 6.0])
        >>> a, b = fit_platt(logits, np.array([0, 0, 1, 0, 1, 1]))
        >>> 0 < a < 1
        True
    """
    a, b, _ = fit_logistic(logits, None, labels, ridge=ridge)
    return a, b


def fit_logistic(
    logits: np.ndarray, extra: np.ndarray | None, labels: np.ndarray, *, ridge: float = 1e-2
) -> tuple[float, float, np.ndarray]:
    """``(a, b, c)`` so that ``sigmoid(a * logit + b + extra @ c)`` fits the labels: a logistic
    regression on the logit and the ``extra`` columns (N, K), by Newton's method with a
    backtracking line search on the log loss of standardised columns and a small ridge on
    every weight but the offset (so overconfident or separable inputs cannot send a weight to
    infinity). Without both classes, with non-finite inputs, or when the logit's fitted weight
    is not positive (its ranking must not flip), the identity ``(1, 0, zeros)``."""
    x = np.asarray(logits, dtype=np.float64).reshape(-1, 1)
    k = 0 if extra is None else np.asarray(extra).reshape(len(x), -1).shape[1]
    if k:
        x = np.concatenate([x, np.asarray(extra, dtype=np.float64).reshape(len(x), k)], axis=1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    identity = (1.0, 0.0, np.zeros(k))
    if len(np.unique(y)) < 2 or not np.isfinite(x).all():
        return identity
    center = x.mean(axis=0)
    spread = np.where(x.std(axis=0) > 1e-12, x.std(axis=0), 1.0)
    design = np.concatenate([(x - center) / spread, np.ones((len(x), 1))], axis=1)
    penalty = np.array([ridge] * (k + 1) + [1e-9])

    def loss(w: np.ndarray) -> float:
        z = design @ w
        shrink = 0.5 * np.sum(penalty[:-1] * w[:-1] ** 2)
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + shrink)

    # start from the identity map on the logit (a = 1, b = 0) and zero extra weights
    w = np.zeros(k + 2)
    w[0], w[-1] = spread[0], center[0]
    current = loss(w)
    for _ in range(100):
        p = sigmoid(design @ w)
        grad = design.T @ (p - y) + penalty * np.append(w[:-1], 0.0)
        hess = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-6 and loss(w - t * step) > current:
            t /= 2
        w, previous = w - t * step, current
        current = loss(w)
        if previous - current < 1e-10 * max(1.0, abs(current)):
            break
    weights = w[:-1] / spread
    a, c = float(weights[0]), weights[1:]
    b = float(w[-1] - np.sum(weights * center))
    if not (a > 0 and np.isfinite(weights).all() and np.isfinite(b)):
        return identity
    return a, b, c


def calibrate(
    model: torch.nn.Module, data: NoduleData, batch_size: int, *, size: bool = True
) -> tuple[float, float]:
    """Fit the model's malignancy calibration on the validation split's labelled nodules and
    store it in the model: Platt scaling (:func:`fit_platt`), or, with ``size`` and a mask head
    trained on masks, a logistic regression on the logit and the mask-measured sizes
    (:func:`fit_logistic`, weights in ``size_weights``). A model already calibrated keeps its
    own. Returns the (scale, offset) in use."""
    net = getattr(model, "module", model)
    calibration = getattr(net, "calibration", None)
    if calibration is None:
        return 1.0, 0.0
    if calibration[2] > 0:
        return float(calibration[0]), float(calibration[1])
    rows = data.rows("val", labelled=True)
    with_sizes = bool(size and getattr(net, "segment", False) and data.has_mask is not None)
    with_sizes = with_sizes and bool(data.has_mask[data.rows("train")].any())
    logits, sizes = raw_scores(net, data.cubes[rows], batch_size)
    a, b, c = fit_logistic(logits, sizes if with_sizes else None, data.labels[rows])
    calibration.copy_(torch.tensor([a, b, 1.0], device=calibration.device))
    if with_sizes:
        net.size_weights.copy_(torch.tensor(c, dtype=torch.float32))
    return a, b


@torch.no_grad()
def raw_scores(
    net: torch.nn.Module, cubes: np.ndarray, batch_size: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Uncalibrated malignancy logits (N,) of uint8 cubes over the model's test-time views, and
    the mask-measured sizes (N, 2) or ``None`` without a mask head
    (:meth:`NoduleNet.raw_outputs`)."""
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    logits, sizes = [], []
    try:
        for i in range(0, len(cubes), batch_size):
            x = torch.from_numpy(cubes[i : i + batch_size]).to(device).unsqueeze(1).float() / 255.0
            logit, _, size, _ = net.raw_outputs(x, net.tta)
            logits.append(logit.float().cpu())
            if size is not None:
                sizes.append(size.float().cpu())
    finally:
        net.train(was_training)
    out = torch.cat(logits).numpy() if logits else np.zeros(0, dtype=np.float32)
    return out, (torch.cat(sizes).numpy() if sizes else None)


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
            dice = mask_dice(model, data, rows, batch_size)
            if dice is not None:
                metrics[f"{split}_mask_dice"] = dice
    finally:
        model.train(was_training)
    metrics.update(operating_metrics(pairs["val"], pairs["test"]))
    return metrics


@torch.no_grad()
def mask_dice(
    model: torch.nn.Module, data: NoduleData, rows: np.ndarray, batch_size: int
) -> float | None:
    """Mean Dice of the predicted mask (probability at least one half, one view) against the
    readers' majority (agreement at least one half, averaged to the mask's grid) over ``rows``
    that have a mask; ``None`` without a mask head or masks."""
    net = getattr(model, "module", model)
    if not getattr(net, "segment", False) or data.masks is None or data.has_mask is None:
        return None
    from abyssal.solutions.nodule.model import NoduleNet

    if not isinstance(net, NoduleNet):
        return None  # an optimized variant (an exported graph) answers without the mask
    rows = np.asarray(rows)[data.has_mask[np.asarray(rows)]]
    if not len(rows):
        return None
    device = next(net.parameters()).device
    scores = []
    for i in range(0, len(rows), batch_size):
        part = rows[i : i + batch_size]
        x = torch.from_numpy(data.cubes[part]).to(device).unsqueeze(1).float() / 255.0
        _, logits = net(x, with_mask=True)
        target = torch.from_numpy(data.masks[part]).to(device).unsqueeze(1).float() / 255.0
        if target.shape[2:] != logits.shape[2:]:
            target = torch.nn.functional.adaptive_avg_pool3d(target, logits.shape[2:])
        p, t = (logits >= 0).flatten(1).float(), (target >= 0.5).flatten(1).float()
        both = (p + t).sum(1)
        dice = torch.where(both > 0, 2 * (p * t).sum(1) / both.clamp_min(1), 1.0)
        scores.append(dice.cpu())
    return float(torch.cat(scores).mean())


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
