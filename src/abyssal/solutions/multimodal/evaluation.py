"""Scoring a multimodal classifier: accuracy and macro F1 per split, the test confusion matrix,
each modality alone (the test samples that have it, the others masked out), and how much each
modality contributed on average (:class:`abyssal.nn.fusion.FusionOutput.contributions`).

Example:
    >>> metrics = evaluate_multimodal(model, data, batch_size=64)  # doctest: +SKIP
    >>> metrics["test_accuracy"], metrics["test_audio_only_accuracy"]  # doctest: +SKIP
    (0.93, 0.61)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from abyssal.nn.metrics import classification_metrics, confusion, prefixed
from abyssal.solutions.multimodal.data import MultimodalData
from abyssal.solutions.multimodal.manifest import MODALITIES
from abyssal.solutions.multimodal.model import flat_inputs
from abyssal.solutions.multimodal.task import batch_inputs


@torch.no_grad()
def score_rows(
    model: torch.nn.Module,
    data: MultimodalData,
    rows: np.ndarray,
    batch_size: int,
    *,
    keep: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (N, K) and modality contributions (N, 3) of ``rows``, in eval mode;
    ``keep``: mask out every other modality (a row left with none is scored on nothing: do not
    pass such rows)."""
    net = getattr(model, "module", model)
    eager = getattr(net, "base", net)  # an optimized variant: explained by its eager network
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    probs, shares = [], []
    try:
        for start in range(0, len(rows), batch_size):
            inputs = batch_inputs(data.inputs, rows[start : start + batch_size])
            if keep is not None:
                allowed = torch.tensor([m in keep for m in MODALITIES])
                inputs["present"] = inputs["present"] & allowed
            inputs = {k: v.to(device) for k, v in inputs.items()}
            out = eager.explain(inputs)
            logits = out.logits
            if eager is not net:  # the optimized variant's own scores
                logits = net(*flat_inputs(inputs, eager.multimodal_spec))
            probs.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
            share = np.zeros((len(out.logits), len(MODALITIES)), dtype=np.float32)
            for j, modality in enumerate(net.modalities):
                share[:, MODALITIES.index(modality)] = out.contributions[:, j].cpu().numpy()
            shares.append(share)
    finally:
        model.train(was)
    k = len(data.classes)
    if not probs:
        return np.zeros((0, k), np.float32), np.zeros((0, len(MODALITIES)), np.float32)
    return np.concatenate(probs), np.concatenate(shares)


def evaluate_multimodal(
    model: torch.nn.Module, data: MultimodalData, batch_size: int
) -> dict[str, float]:
    """``val_*`` and ``test_*`` accuracy, macro F1 and per-class recall; ``<split>_<modality>
    _only_accuracy`` (the samples having that modality, scored on it alone); the test confusion
    counts and ``test_contribution_<modality>`` (mean share where present)."""
    metrics: dict[str, float] = {}
    labels = data.inputs.labels
    for split in ("val", "test"):
        rows = data.rows(split)
        rows = rows[labels[rows] >= 0]
        probs, shares = score_rows(model, data, rows, batch_size)
        found = classification_metrics(labels[rows], probs, data.classes, count="samples")
        metrics.update(prefixed(found, f"{split}_"))
        present = data.inputs.present[rows]
        for k, modality in enumerate(MODALITIES):
            having = present[:, k]
            if modality not in data.modalities or not having.any():
                continue
            if len(data.modalities) > 1:
                alone, _ = score_rows(model, data, rows[having], batch_size, keep=[modality])
                hit = alone.argmax(1) == labels[rows[having]]
                metrics[f"{split}_{modality}_only_accuracy"] = float(hit.mean())
            if split == "test":
                metrics[f"test_contribution_{modality}"] = float(shares[having, k].mean())
        if split == "test":
            m = confusion(labels[rows], probs.argmax(1), len(data.classes))
            for i, t in enumerate(data.classes):
                for j, p in enumerate(data.classes):
                    metrics[f"test_confusion__{t}__{p}"] = int(m[i, j])
    return metrics
