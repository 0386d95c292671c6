"""Scoring a defect model: class metrics per split, Grad-CAM heat inside the annotated boxes,
nearest-neighbour accuracy of self-supervised embeddings, and the prototype-head baseline.

Example:
    >>> metrics = evaluate_defect(cfg, model, data)  # doctest: +SKIP
    >>> metrics["test_accuracy"], metrics["test_heat_in_box"]  # doctest: +SKIP
    (0.99, 0.71)
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from abyssal.core.errors import AbyssalError, DataError
from abyssal.nn.gradcam import GradCAM, heat_in_boxes
from abyssal.nn.metrics import classification_metrics, knn_accuracy, prefixed
from abyssal.solutions.defect.config import DefectConfig
from abyssal.solutions.defect.data import DefectData
from abyssal.solutions.defect.model import DefectNet, class_means, prototype_logits

log = logging.getLogger(__name__)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def pixels(data: DefectData, rows: np.ndarray, device: torch.device) -> torch.Tensor:
    """(B, C, S, S) float in [0, 1] of ``rows``, on ``device``."""
    return torch.from_numpy(data.images[rows]).to(device).float().div_(255.0)


@torch.no_grad()
def split_outputs(
    model: torch.nn.Module, data: DefectData, rows: np.ndarray, batch_size: int, what: str
) -> torch.Tensor:
    """``logits`` or ``embed``-dings of ``rows``, batch by batch, on the CPU."""
    device = _device(model)
    net = getattr(model, "module", model)
    fn = net.embed if what == "embed" else model
    parts = [
        fn(pixels(data, rows[i : i + batch_size], device)).float().cpu()
        for i in range(0, len(rows), batch_size)
    ]
    return torch.cat(parts) if parts else torch.zeros(0, 0)


def for_model(model: torch.nn.Module, data: DefectData) -> DefectData:
    """``data`` with its labels in the model's class order (data scored by a stored model may
    hold a subset of its classes); a class the model never learnt is refused, named."""
    spec = getattr(getattr(model, "module", model), "defect_spec", None)
    if spec is None or list(spec["classes"]) == list(data.classes):
        return data
    known = list(spec["classes"])
    unknown = [c for c in data.classes if c not in known]
    if unknown:
        raise DataError(f"class {unknown[0]!r} was never trained; the model knows {known}")
    index = np.array([known.index(c) for c in data.classes], dtype=np.int64)
    return dataclasses.replace(data, labels=index[data.labels], classes=known)


def evaluate_defect(
    cfg: DefectConfig, model: torch.nn.Module, data: DefectData
) -> dict[str, float]:
    """``val_*`` and ``test_*`` metrics of ``model`` on ``data``'s split, and ``train_images``."""
    data = for_model(model, data)
    was_training = model.training
    model.eval()
    size = cfg.data.eval_batch_size
    metrics: dict[str, float] = {"train_images": len(data.rows("train"))}
    if cfg.objective == "simclr":
        metrics.update(_embedding_metrics(model, data, size))
    else:
        for split in ("val", "test"):
            rows = data.rows(split)
            probs = torch.softmax(split_outputs(model, data, rows, size, "logits"), dim=1)
            m = classification_metrics(data.labels[rows], probs, data.classes)
            metrics.update(prefixed(m, f"{split}_"))
        if cfg.heat_in_box:
            heat = heat_in_box_share(model, data, data.rows("test"), size)
            metrics.update(prefixed(heat, "test_"))
    model.train(was_training)
    return metrics


def _embedding_metrics(model: torch.nn.Module, data: DefectData, size: int) -> dict[str, float]:
    """1-NN accuracy inside each split, and nearest-class-mean accuracy against the training
    split's class means."""
    out: dict[str, float] = {}
    train = split_outputs(model, data, data.rows("train"), size, "embed")
    means = class_means(train, torch.from_numpy(data.labels[data.rows("train")]), len(data.classes))
    for split in ("val", "test"):
        rows = data.rows(split)
        z = split_outputs(model, data, rows, size, "embed")
        out[f"{split}_knn_accuracy"] = knn_accuracy(z, data.labels[rows])
        predicted = prototype_logits(z, means).argmax(dim=1).numpy()
        out[f"{split}_proto_accuracy"] = float((predicted == data.labels[rows]).mean())
    return out


def heat_in_box_share(
    model: torch.nn.Module, data: DefectData, rows: np.ndarray, batch_size: int
) -> dict[str, float]:
    """``heat_in_box``: the mean share of the Grad-CAM heat (for the predicted class) inside the
    annotated boxes, over the images of ``rows`` that have boxes; ``box_area``: the mean share of
    the image the boxes cover (what heat spread evenly would score). Empty when no image has
    boxes, or when no gradient can be had (an optimized variant, inference mode)."""
    rows = np.array([r for r in rows if data.boxes[r]], dtype=np.int64)
    net = getattr(model, "module", model)
    if len(rows) == 0 or not isinstance(net, DefectNet) or torch.is_inference_mode_enabled():
        return {}
    even = torch.ones(data.size, data.size)
    shares, areas = [], []
    for i in range(0, len(rows), batch_size):
        part = rows[i : i + batch_size]
        try:
            maps, _ = gradcam_maps(net, pixels(data, part, _device(model)), data.size)
        except CamLayerError as exc:  # e.g. a plugin backbone: score the rest, say why not this
            log.warning("heat_in_box left out: %s", exc)
            return {}
        for r, heat in zip(part, maps.cpu(), strict=True):
            boxes = [_xyxy(b) for b in data.boxes[r]]
            shares.append(heat_in_boxes(heat, boxes))
            areas.append(heat_in_boxes(even, boxes))
    values = np.array(shares, dtype=np.float64)
    if not np.isfinite(values).any():
        return {}
    return {"heat_in_box": float(np.nanmean(values)), "box_area": float(np.mean(areas))}


def last_conv_stage(net: torch.nn.Module, size: int = 224) -> torch.nn.Module:
    """The module Grad-CAM reads: the one the backbone's ``cam_layer()`` returns (a plugin
    backbone may name its last feature map so); a ResNet's ``layer4``, or ``layer3`` for images
    under 128 pixels (``layer4`` would leave fewer than 4x4 cells); else the backbone's last
    module that holds a convolution."""
    backbone = net.backbone if isinstance(net, DefectNet) else net
    chooser = getattr(backbone, "cam_layer", None)
    if callable(chooser):
        layer = chooser()
        if not isinstance(layer, torch.nn.Module):
            raise CamLayerError(
                f"the backbone's cam_layer() returned a {type(layer).__name__}, not a module"
            )
        return layer
    if hasattr(backbone, "layer4"):
        return backbone.layer4 if size >= 128 else backbone.layer3
    last = None
    for module in backbone.children():
        if any(isinstance(m, torch.nn.Conv2d) for m in module.modules()):
            last = module
    if last is None:
        raise CamLayerError(
            "the backbone has no convolution for Grad-CAM; give it a cam_layer() method "
            "returning its last feature-map module"
        )
    return last


class CamLayerError(AbyssalError, ValueError):
    """The backbone has no layer Grad-CAM can read: none named, no convolution, or one whose
    output is not a feature map (B, K, h, w)."""


def gradcam_maps(
    net: torch.nn.Module,
    x: torch.Tensor,
    size: int,
    classes: torch.Tensor | Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM maps of ``x`` ((B, S, S) in [0, 1]) and the classes explained, read at
    :func:`last_conv_stage`.

    Raises:
        CamLayerError: that layer's output is not a feature map (a plugin backbone that pools
            inside its last child): the message says how a backbone names the right layer.
    """
    layer = last_conv_stage(net, size)
    try:
        return GradCAM(net, layer)(x, classes)
    except ValueError as exc:
        if "GradCAM layer output must be" not in str(exc):
            raise
        backbone = net.backbone if isinstance(net, DefectNet) else net
        raise CamLayerError(
            f"Grad-CAM cannot explain the backbone {type(backbone).__name__}: the layer it reads "
            f"({type(layer).__name__}) {str(exc).removeprefix('GradCAM layer output ')}; give "
            "the backbone a cam_layer() method returning its last feature-map module"
        ) from exc


def _xyxy(box: Any) -> tuple[float, float, float, float]:
    return (box.xmin, box.ymin, box.xmax, box.ymax)


def prototype_baseline(
    cfg: DefectConfig, data: DefectData, state: Mapping[str, torch.Tensor] | None
) -> dict[str, float]:
    """The few-shot baseline: the pretrained backbone, untrained further, classifies each image
    by its nearest class mean of the training images' embeddings (``proto_*`` metrics)."""
    from abyssal.solutions.defect.model import load_backbone_weights
    from abyssal.solutions.defect.solution import build_defect_model

    if state is None:
        return {}
    spec = {"classes": data.classes, "channels": data.channels, "image_size": data.size}
    model = build_defect_model(cfg, spec)
    load_backbone_weights(model, state, source=cfg.model.pretrained)
    model.eval()
    size = cfg.data.eval_batch_size
    train = split_outputs(model, data, data.rows("train"), size, "embed")
    means = class_means(train, torch.from_numpy(data.labels[data.rows("train")]), len(data.classes))
    out: dict[str, float] = {}
    for split in ("val", "test"):
        rows = data.rows(split)
        scores = prototype_logits(split_outputs(model, data, rows, size, "embed"), means)
        m = classification_metrics(data.labels[rows], torch.softmax(scores, dim=1), data.classes)
        out.update(prefixed({k: m[k] for k in ("accuracy", "macro_f1")}, f"proto_{split}_"))
    return out
