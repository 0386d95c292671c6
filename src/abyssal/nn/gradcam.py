"""Grad-CAM: where in the picture a convolutional classifier looked (Selvaraju et al., "Grad-CAM:
Visual Explanations from Deep Networks via Gradient-based Localization", ICCV 2017,
arXiv:1610.02391).

For a layer with activations ``A`` (K maps of h x w, or d x h x w for volumes) and the logit
``y_c`` of class ``c``:

    w_k = mean over every position p of d y_c / d A_k[p]
    L_c = ReLU(sum_k w_k * A_k)

``L_c`` is upsampled to the input size (bilinearly for images, trilinearly for volumes) and divided
by its maximum. :func:`heat_in_boxes` measures how much of a 2-D map's heat falls inside annotated
boxes (a "pointing" check of the explanation against ground truth).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

NAMES_SHOWN = 10
"""How many valid module names an unknown-name error lists."""

INPUT_LAYOUT = {2: "(B, C, H, W)", 3: "(B, C, D, H, W)"}
"""The input layout for each number of spatial dimensions GradCAM supports."""

LAYER_LAYOUT = {2: "(B, K, h, w)", 3: "(B, K, d, h, w)"}
"""The layer output layout that goes with each input layout."""

UPSAMPLING = {2: "bilinear", 3: "trilinear"}
"""``F.interpolate`` mode that brings a map to the input size, by number of spatial dims."""

Box = tuple[float, float, float, float]
"""(xmin, ymin, xmax, ymax) in pixels; xmax and ymax are exclusive."""


def find_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule of ``model`` at a dotted ``name`` (``""`` is ``model`` itself).

    Args:
        model: the model to search.
        name: dotted path as in ``named_modules()``, e.g. ``"backbone.layer4"`` or ``"features.3"``.

    Returns:
        The submodule.

    Raises:
        ValueError: no such module; the message lists children of the deepest part that exists.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
        >>> find_module(net, "0")
        Conv2d(1, 4, kernel_size=(3, 3), stride=(1, 1))
    """
    module, walked = model, []
    for part in name.split(".") if name else []:
        children = dict(module.named_children())
        if part not in children:
            raise ValueError(_unknown_module_message(model, name, walked, list(children)))
        module = children[part]
        walked.append(part)
    return module


def _unknown_module_message(model: nn.Module, name: str, walked: list[str], kids: list[str]) -> str:
    parent = ".".join(walked)
    where = f"'{parent}'" if parent else type(model).__name__
    if not kids:
        return f"no module '{name}' in {type(model).__name__}: {where} has no children"
    full = [f"{parent}.{kid}" if parent else kid for kid in kids]
    shown = ", ".join(repr(n) for n in full[:NAMES_SHOWN])
    more = f", ... ({len(full)} in all)" if len(full) > NAMES_SHOWN else ""
    return f"no module '{name}' in {type(model).__name__}; {where} has: {shown}{more}"


class GradCAM:
    """Grad-CAM maps of one layer of a classifier of images or volumes.

    Images (2 spatial dims) and volumes such as CT cubes (3 spatial dims) work alike: the layer's
    output must have as many spatial dims as the input, and the map is upsampled to the input's
    size bilinearly (2-D) or trilinearly (3-D).

    The model runs in whatever mode it is in (call ``model.eval()`` first for dropout-free,
    batch-norm-frozen maps). A call leaves no hooks, does not change ``model.training`` or any
    ``requires_grad``, and writes no parameter's ``.grad`` (the gradient is taken with
    :func:`torch.autograd.grad` with respect to the layer's output only). It works under an outer
    ``torch.no_grad()`` and on a frozen model (every ``requires_grad=False``).

    Args:
        model: maps (B, C, H, W) or (B, C, D, H, W) inputs to (B, num_classes) logits. To
            explain one column for every item whatever the prediction (say a nodule classifier's
            malignancy logit in column 0), call with ``classes=[0] * B``.
        layer: the layer whose output (B, K, h, w) or (B, K, d, h, w) is explained, or its dotted
            name in ``model``; usually the last convolutional block. It must run exactly once per
            forward pass.

    Shapes:
        - inputs: (B, C, H, W) or (B, C, D, H, W) float.
        - layer output: (B, K, h, w) or (B, K, d, h, w), as many spatial dims as the inputs.
        - classes: (B,) class indices, or ``None`` for each item's top-1 prediction.
        - output: ((B, H, W) or (B, D, H, W) float32 in [0, 1], (B,) int64 classes explained), on
          the inputs' device. Each map is divided by its own maximum; an all-zero map stays zero.

    Example:
        >>> cam, classes = GradCAM(model, "backbone.layer4")(images)  # doctest: +SKIP
        >>> cam.shape, classes.shape  # doctest: +SKIP
        (torch.Size([8, 224, 224]), torch.Size([8]))
        >>> cam, _ = GradCAM(nodule_net, "features")(cubes, classes=[0] * 4)  # doctest: +SKIP
        >>> cam.shape  # doctest: +SKIP
        torch.Size([4, 32, 32, 32])
    """

    def __init__(self, model: nn.Module, layer: nn.Module | str) -> None:
        self.model = model
        self.layer = find_module(model, layer) if isinstance(layer, str) else layer
        if not any(m is self.layer for m in model.modules()):
            raise ValueError(f"GradCAM layer {type(self.layer).__name__} is not part of the model")

    def __call__(
        self, inputs: torch.Tensor, classes: torch.Tensor | Sequence[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if inputs.ndim - 2 not in INPUT_LAYOUT or not inputs.dtype.is_floating_point:
            raise ValueError(
                f"GradCAM inputs must be float {INPUT_LAYOUT[2]} or {INPUT_LAYOUT[3]}, got "
                f"{inputs.dtype} shape {tuple(inputs.shape)}"
            )
        with torch.enable_grad():
            # a copy that requires grad, so the graph exists even when every parameter is frozen
            logits, acts = self._forward(inputs.detach().requires_grad_(True), inputs.ndim - 2)
            chosen = _chosen_classes(logits, classes)
            score = logits.gather(1, chosen.unsqueeze(1)).sum()  # one backward for the batch
            (grads,) = torch.autograd.grad(score, acts, allow_unused=True)
        if grads is None:
            raise ValueError("GradCAM: the model's logits do not depend on the layer's output")
        return _cam(acts.detach(), grads, inputs.shape[2:]), chosen

    def _forward(self, inputs: torch.Tensor, spatial: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the model, keeping the layer's output (with ``spatial`` spatial dims, as the
        inputs); the hook is removed whatever happens."""
        seen: list[torch.Tensor] = []
        handle = self.layer.register_forward_hook(lambda _m, _i, out: seen.append(out))
        try:
            logits = self.model(inputs)
        finally:
            handle.remove()
        if len(seen) != 1:
            raise ValueError(f"GradCAM layer ran {len(seen)} times in one forward pass; need once")
        acts = seen[0]
        if not isinstance(acts, torch.Tensor) or acts.ndim != spatial + 2:
            shape = tuple(acts.shape) if isinstance(acts, torch.Tensor) else type(acts).__name__
            raise ValueError(
                f"GradCAM layer output must be a {LAYER_LAYOUT[spatial]} tensor for "
                f"{INPUT_LAYOUT[spatial]} inputs, got {shape}"
            )
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
            raise ValueError(f"GradCAM model must return (B, num_classes) logits, got {shape}")
        if not acts.requires_grad:
            raise ValueError("GradCAM layer output is detached from the inputs (no gradient)")
        return logits, acts


def _chosen_classes(
    logits: torch.Tensor, classes: torch.Tensor | Sequence[int] | None
) -> torch.Tensor:
    """(B,) int64 classes to explain: the given ones (checked) or each row's argmax."""
    batch, num_classes = logits.shape
    if classes is None:
        return logits.detach().argmax(dim=1)
    chosen = torch.as_tensor(classes, device=logits.device).long().reshape(-1)
    if chosen.numel() != batch:
        raise ValueError(f"GradCAM got {chosen.numel()} classes for a batch of {batch}")
    if batch and (int(chosen.min()) < 0 or int(chosen.max()) >= num_classes):
        raise ValueError(f"GradCAM classes {chosen.tolist()} out of range [0, {num_classes})")
    return chosen


def _cam(acts: torch.Tensor, grads: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Weighted, rectified, upsampled and max-normalised maps (B, *size) from (B, K, *spatial).

    ``spatial`` is (h, w) or (d, h, w) and ``size`` the input's (H, W) or (D, H, W).
    """
    acts, grads = acts.float(), grads.float()
    space = tuple(range(2, acts.ndim))  # (2, 3) or (2, 3, 4)
    weights = grads.mean(dim=space, keepdim=True)  # (B, K, 1, 1[, 1])
    cam = F.relu((weights * acts).sum(dim=1, keepdim=True))  # (B, 1, [d,] h, w)
    mode = UPSAMPLING[len(space)]
    cam = F.interpolate(cam, size=tuple(size), mode=mode, align_corners=False)
    cam = cam.squeeze(1)  # (B, [D,] H, W)
    peak = cam.amax(dim=tuple(range(1, cam.ndim)), keepdim=True)  # (B, 1, 1[, 1])
    cam = torch.where(peak > 0, cam / peak.clamp_min(torch.finfo(torch.float32).tiny), 0.0)
    return cam.clamp(0.0, 1.0)


def heat_in_boxes(cam: torch.Tensor, boxes: Sequence[Box]) -> float:
    """Share of a map's total heat that lies inside the union of ``boxes``.

    A pixel (column ``i``, row ``j``) is inside a box when its centre ``(i + 0.5, j + 0.5)`` is in
    ``[xmin, xmax) x [ymin, ymax)``: for whole-number boxes exactly columns ``xmin .. xmax - 1``.
    Boxes are clipped to the map; overlapping boxes count their pixels once.

    Args:
        cam: a non-negative heat map.
        boxes: (xmin, ymin, xmax, ymax) in the map's pixel coordinates, xmax/ymax exclusive.

    Returns:
        A share in [0, 1]; ``nan`` when the map has no heat at all or there are no boxes (the
        share is undefined then, so it must not count as 0 or 1 in an average; use ``nanmean``).

    Raises:
        ValueError: ``cam`` not 2-D or with negative values, or a box not of four numbers with
            ``xmin <= xmax`` and ``ymin <= ymax``.

    Shapes:
        - cam: (H, W).

    Example:
        >>> heat_in_boxes(torch.ones(4, 4), [(0, 0, 2, 2)])
        0.25
    """
    cam = torch.as_tensor(cam)
    if cam.ndim != 2:
        raise ValueError(f"heat_in_boxes cam must be 2-D (H, W), got shape {tuple(cam.shape)}")
    if cam.numel() and float(cam.min()) < 0:
        raise ValueError(f"heat_in_boxes cam must be non-negative, min is {float(cam.min())}")
    mask = _box_mask(cam.shape, boxes)
    total = float(cam.double().sum())
    if not boxes or total <= 0:
        return math.nan
    return float(cam.double()[mask.to(cam.device)].sum()) / total


def _box_mask(shape: Sequence[int], boxes: Sequence[Box]) -> torch.Tensor:
    """(H, W) bool mask of the pixels whose centres lie in any box."""
    height, width = shape
    mask = torch.zeros(height, width, dtype=torch.bool)
    for index, box in enumerate(boxes):
        if len(box) != 4:
            raise ValueError(f"box {index} must be (xmin, ymin, xmax, ymax), got {box!r}")
        xmin, ymin, xmax, ymax = (float(v) for v in box)
        if not (xmin <= xmax and ymin <= ymax):
            raise ValueError(f"box {index} {box!r} has xmax < xmin or ymax < ymin")
        x0, x1 = _pixel_span(xmin, xmax, width)
        y0, y1 = _pixel_span(ymin, ymax, height)
        mask[y0:y1, x0:x1] = True
    return mask


def _pixel_span(low: float, high: float, size: int) -> tuple[int, int]:
    """Indices ``[start, stop)`` of pixels whose centre ``i + 0.5`` lies in ``[low, high)``."""
    low, high = (min(max(v, -1.0), size + 1.0) for v in (low, high))  # inf-safe
    start = min(max(math.ceil(low - 0.5), 0), size)
    stop = min(max(math.ceil(high - 0.5), 0), size)
    return start, max(start, stop)
