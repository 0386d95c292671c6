"""The nodule networks: a 3-D residual encoder, multi-scale fusion, a knowledge-guided decoder, a
restoration decoder for Models Genesis pretraining, and torchvision's 3-D ResNet-18 as a baseline.

:class:`NoduleNet` maps cubes (B, 1, S, S, S) in [0, 1] to (B, 1 + A): column 0 is the
malignancy logit, columns 1.. the A predicted attributes (radiologist ratings, diameter in mm) in
their own units. With ``knowledge=True`` the malignancy head reads the predicted (standardised)
attributes beside the image features, so every probability comes with the attributes that
support it; with ``knowledge=False`` A is 0.

Fusion (feature-pyramid style, Lin et al. 2017, "Feature Pyramid Networks for Object
Detection"): the last three stages (S/2, S/4, S/8 voxels a side) are projected to one width,
merged top-down (coarse upsampled and added to fine) and smoothed; each level is pooled (mean and
max) and the pooled vectors concatenated, so a 4 mm nodule is still several voxels wide on the
finest level while a 30 mm one fills the coarsest.

Segmentation (``segment=True``): a small decoder predicts the nodule's mask at the cube's own
resolution (the finest fused level, S/2 voxels a side, upsampled and joined with the full-size
stem, U-Net style; trained on the readers' masks), and each level is also pooled with that mask
as weights, so the heads read the nodule's own features beside the whole cube's. Versions whose
spec has no ``mask_grid`` predicted the mask at S/2 from the fused level alone
(``mask_grid="half"``) and load as they were. Test-time
augmentation (``tta``) averages the outputs over the cube's symmetries in eval mode (views of a
small batch in one pass). The
malignancy logit passes, in eval mode, through a scale and offset (``calibration``, identity
until :func:`calibrate` fits them on validation nodules: Platt scaling). With the mask head, the
calibration can also weigh the nodule's size as the predicted mask measures it
(:func:`mask_sizes`: the log equivalent diameters of the mask's volume and of its largest axial
section, the way a radiologist measures a nodule), with weights fitted beside the scale
(``size_weights``, zero until fitted): size is the strongest single sign of malignancy in LIDC,
and a measured size is a second opinion on the one the network's features carry.

Example:
    >>> net = NoduleNet(width=8, attributes=2)
    >>> net(torch.rand(2, 1, 16, 16, 16)).shape
    torch.Size([2, 3])
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

ENCODER_PREFIXES = ("encoder.",)
"""State-dict prefixes a pretrained (Models Genesis) version hands to a classifier."""
CORE_PREFIXES = ("encoder.stem.", "encoder.stages.")
"""What must fit: the stem and stages. The fusion layers are taken when their shapes match (a
classifier without fusion keeps its own)."""


class ResBlock3d(nn.Module):
    """Two 3x3x3 convolutions with batch norm and a residual path (projected when the shape
    changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(cout)
        self.conv2 = nn.Conv3d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(cout)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(
                nn.Conv3d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm3d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.skip(x))


class Encoder3d(nn.Module):
    """Stem at full resolution and four stages of two residual blocks (widths w, 2w, 4w, 8w; the
    last three halve the resolution), then the fusion of stages 2-4 (or stage 4 alone).

    Shapes:
        input: (B, 1, S, S, S); ``levels``: [(B, F, S/2, ...), (B, F, S/4, ...), (B, F, S/8, ...)]
        (or only the last without fusion); ``stem``: (B, w, S, S, S).
    """

    def __init__(self, width: int = 24, fused: int = 64, fusion: bool = True) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(
            nn.Conv3d(1, w, 3, padding=1, bias=False), nn.BatchNorm3d(w), nn.ReLU(inplace=True)
        )
        widths = [w, 2 * w, 4 * w, 8 * w]
        self.stages = nn.ModuleList()
        cin = w
        for i, cout in enumerate(widths):
            stride = 1 if i == 0 else 2
            self.stages.append(nn.Sequential(ResBlock3d(cin, cout, stride), ResBlock3d(cout, cout)))
            cin = cout
        self.fusion = fusion
        used = widths[1:] if fusion else widths[-1:]
        self.lateral = nn.ModuleList(nn.Conv3d(c, fused, 1) for c in used)
        self.smooth = nn.ModuleList(
            nn.Sequential(
                nn.Conv3d(fused, fused, 3, padding=1, bias=False),
                nn.BatchNorm3d(fused),
                nn.ReLU(inplace=True),
            )
            for _ in used
        )
        self.fused = fused

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        stem = self.stem(x)
        feats, y = [], stem
        for stage in self.stages:
            y = stage(y)
            feats.append(y)
        used = feats[1:] if self.fusion else feats[-1:]
        lateral = [conv(f) for conv, f in zip(self.lateral, used, strict=True)]
        top = lateral[-1]
        merged = [top]
        for lat in reversed(lateral[:-1]):  # coarse to fine
            top = lat + F.interpolate(
                top, size=lat.shape[2:], mode="trilinear", align_corners=False
            )
            merged.insert(0, top)
        levels = [smooth(m) for smooth, m in zip(self.smooth, merged, strict=True)]
        return levels, stem

    @property
    def pooled_size(self) -> int:
        return 2 * self.fused * len(self.lateral)


def pool_levels(levels: Sequence[torch.Tensor], mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean and max of each level over its voxels, concatenated: (B, 2 F L); with ``mask``
    (B, 1, D, H, W) weights in [0, 1] (at the finest level's size or finer), also each level's
    mean weighted by the mask averaged to the level's size: (B, 3 F L)."""
    parts = []
    for level in levels:
        parts += [level.mean(dim=(2, 3, 4)), level.amax(dim=(2, 3, 4))]
        if mask is not None:
            weight = _shrink(mask, level.shape[2:])
            total = weight.sum(dim=(2, 3, 4)).clamp_min(1e-3)
            parts.append((level * weight).sum(dim=(2, 3, 4)) / total)
    return torch.cat(parts, dim=1)


def _shrink(mask: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``mask`` (B, 1, ...) averaged down to ``size``: block means where the sizes divide (ONNX
    has no adaptive pooling), trilinear resampling where they do not."""
    have = mask.shape[2:]
    if tuple(have) == tuple(size):
        return mask
    if all(h % s == 0 for h, s in zip(have, size, strict=True)):
        kernel = tuple(h // s for h, s in zip(have, size, strict=True))
        return F.avg_pool3d(mask, kernel)
    return F.interpolate(mask, size=tuple(size), mode="trilinear", align_corners=False)


SYMMETRIES: tuple[tuple[tuple[int, ...], bool], ...] = tuple(
    (tuple(d for d, on in ((2, z), (3, y), (4, x)) if on), t)
    for z in (False, True)
    for t in (False, True)
    for y in (False, True)
    for x in (False, True)
)
"""The cube's 16 symmetries that keep the slice axis: (flipped dims, transpose y/x), ordered so
that the first 2, 4, 8 are themselves closed under composition (x flips; in-plane flips; the
in-plane dihedral group), and all 16 add the z flip."""


VIEW_CUBES = 64
"""Test-time views of a small batch run together up to this many cubes per pass."""


def mask_sizes(mask_logits: torch.Tensor) -> torch.Tensor:
    """The size of each predicted mask (B, 1, s, s, s), in voxels of the mask's grid: (B, 2) the
    log equivalent diameter of its volume (the sphere of as many voxels) and the log equivalent
    diameter of its largest axial section (the circle of the largest slice's voxels), counting
    the voxels the head calls nodule (probability at least one half: summed probabilities would
    count the faint background of the whole cube), each at least half a voxel (an empty mask is
    tiny, not undefined).

    Example:
        >>> big = torch.full((1, 1, 8, 8, 8), 10.0)
        >>> mask_sizes(big).exp().round()
        tensor([[10.,  9.]])
    """
    inside = (mask_logits.float() >= 0).float().flatten(1, 2)  # (B, s, s, s): slices first
    volume = inside.sum(dim=(1, 2, 3))
    section = inside.sum(dim=(2, 3)).amax(dim=1)
    eq = (volume * (6.0 / torch.pi)).clamp_min(0.125).pow(1.0 / 3.0)
    axial = (section * (4.0 / torch.pi)).clamp_min(0.25).sqrt()
    return torch.stack([eq.log(), axial.log()], dim=1)


def symmetric_views(x: torch.Tensor, index: int) -> torch.Tensor:
    """Symmetry ``index`` of :data:`SYMMETRIES` applied to ``x`` (B, C, D, H, W) with H == W."""
    dims, transpose = SYMMETRIES[index]
    view = x.transpose(3, 4) if transpose else x
    return view.flip(dims) if dims else view


def _decoder(cin: int, width: int) -> nn.Sequential:
    """Features to one voxel-wise channel (restored intensity or mask logit)."""
    return nn.Sequential(
        nn.Conv3d(cin, width, 3, padding=1, bias=False),
        nn.BatchNorm3d(width),
        nn.ReLU(inplace=True),
        nn.Conv3d(width, 1, 1),
    )


class AttributeScale(nn.Module):
    """Standardisation of the attributes: (value or log value - centre) / scale per attribute;
    restored values are clipped to ``[low, high]`` in eval mode (the range seen in training, so a
    predicted rating stays on its scale)."""

    def __init__(
        self,
        center: Sequence[float],
        scale: Sequence[float],
        log: Sequence[bool],
        low: Sequence[float] | None = None,
        high: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        n = len(center)
        low = [-1e6] * n if low is None else low
        high = [1e6] * n if high is None else high
        self.register_buffer("center", torch.tensor(list(center), dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(list(scale), dtype=torch.float32))
        self.register_buffer("log", torch.tensor(list(log), dtype=torch.bool))
        self.register_buffer("low", torch.tensor(list(low), dtype=torch.float32))
        self.register_buffer("high", torch.tensor(list(high), dtype=torch.float32))

    def standardise(self, values: torch.Tensor) -> torch.Tensor:
        safe = torch.where(self.log, values.clamp_min(1e-3).log(), values)
        return (safe - self.center) / self.scale

    def restore(self, z: torch.Tensor) -> torch.Tensor:
        raw = z * self.scale + self.center
        raw = torch.where(self.log, raw.clamp(max=10.0).exp(), raw)
        if self.training:  # clipped values have no gradient: clip predictions only
            return raw
        return torch.minimum(torch.maximum(raw, self.low), self.high)


class NoduleNet(nn.Module):
    """Encoder (ours, or torchvision's r3d_18), attribute heads, malignancy head; a restoration
    decoder instead of the heads for Models Genesis pretraining.

    Args:
        width: the encoder's first-stage channels.
        attributes: A, the attributes predicted (0: none).
        knowledge: feed the standardised predicted attributes to the malignancy head.
        fusion: fuse stages 2-4 (else stage 4 alone).
        dropout: before the heads.
        scale: attribute standardisation ``(center, scale, log[, low, high])``; default 0, 1, no
            log, no clipping.
        arch: ``fusion`` (ours) or ``resnet18`` (torchvision's r3d_18, one input channel).
        restore: build the Models Genesis decoder; ``forward`` returns the restored cube.
        segment: a mask head and mask-guided pooling (``arch=fusion``);
            ``forward(x, with_mask=True)`` also returns the mask logits (B, 1, S, S, S), or
            (B, 1, S/2, S/2, S/2) with ``mask_grid="half"``.
        mask_grid: ``full`` (the cube's grid, from the fused level and the stem) or ``half``
            (the fused level's grid alone: versions saved before the full grid).
        tta: in eval mode, average the outputs over the first ``tta`` of :data:`SYMMETRIES`
            (one forward pass per view).
    """

    def __init__(
        self,
        width: int = 24,
        attributes: int = 0,
        *,
        knowledge: bool = True,
        fusion: bool = True,
        dropout: float = 0.2,
        scale: Sequence[Sequence[Any]] | None = None,
        arch: str = "fusion",
        restore: bool = False,
        segment: bool = False,
        tta: int = 1,
        mask_grid: str = "full",
    ) -> None:
        super().__init__()
        self.arch, self.restore = arch, restore
        self.segment = segment and arch != "resnet18" and not restore
        self.tta = tta
        self.mask_grid = mask_grid
        self.knowledge = knowledge and attributes > 0
        self.attributes = attributes if self.knowledge else 0
        if arch == "resnet18":
            self.encoder = _r3d18()
            features = 512
        else:
            self.encoder = Encoder3d(width, fusion=fusion)
            features = self.encoder.pooled_size
        if restore:
            self.decoder = _decoder(self.encoder.fused + width, width)
            return
        if self.segment:
            joined = self.encoder.fused + (width if mask_grid == "full" else 0)
            self.mask_head = _decoder(joined, width)
            features += self.encoder.fused * len(self.encoder.lateral)
        # Platt scaling of the malignancy logit: (scale, offset, fitted)
        self.register_buffer("calibration", torch.tensor([1.0, 0.0, 0.0]))
        # weights of the mask-measured sizes (log equivalent, log axial diameter) in the
        # calibrated logit: zero unless fitted with the calibration (segment only)
        self.register_buffer("size_weights", torch.zeros(2))
        self.drop = nn.Dropout(dropout)
        a = self.attributes
        if scale is None:
            scale = ([0.0] * a, [1.0] * a, [False] * a)
        self.scale = AttributeScale(*scale)
        hidden = 128
        self.attribute_head = (
            nn.Sequential(nn.Linear(features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, a))
            if a
            else None
        )
        self.malignancy_head = nn.Sequential(
            nn.Linear(features + a, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )

    def cam_layer(self) -> nn.Module:
        """The layer Grad-CAM explains: the finest fused level (ours), ResNet's last stage."""
        if self.arch == "resnet18":
            return self.encoder.layer4
        return self.encoder.smooth[0]

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, features) pooled image features and, with ``segment``, the mask logits."""
        if self.arch == "resnet18":
            return self.encoder(x), None
        levels, stem = self.encoder(x)
        if not self.segment:
            return pool_levels(levels), None
        if self.mask_grid == "full":
            mask_logits = self._decode(levels, stem, self.mask_head)
        else:
            mask_logits = self.mask_head(levels[0])
        return pool_levels(levels, torch.sigmoid(mask_logits)), mask_logits

    def _decode(
        self, levels: list[torch.Tensor], stem: torch.Tensor, head: nn.Module | None = None
    ) -> torch.Tensor:
        """``head`` (default: the restoration decoder) on the finest level upsampled to the
        stem's size and joined with the stem."""
        up = F.interpolate(levels[0], size=stem.shape[2:], mode="trilinear", align_corners=False)
        return (head or self.decoder)(torch.cat([up, stem], dim=1))

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(B,) malignancy logits (uncalibrated), (B, A) standardised attributes and the mask
        logits (B, 1, S, S, S) (S/2 with ``mask_grid="half"``) or ``None``."""
        feats, mask_logits = self.embed(x)
        feats = self.drop(feats)
        if self.attribute_head is None:
            z = feats.new_zeros(feats.shape[0], 0)
            return self.malignancy_head(feats).squeeze(1), z, mask_logits
        z = self.attribute_head(feats)
        logit = self.malignancy_head(torch.cat([feats, z], dim=1)).squeeze(1)
        return logit, z, mask_logits

    def forward(
        self, x: torch.Tensor, *, with_mask: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        if self.restore:
            levels, stem = self.encoder(x)
            return torch.sigmoid(self._decode(levels, stem))
        views = 1 if self.training or with_mask else self.tta
        logit, z, sizes, mask_logits = self.raw_outputs(x, views)
        if not self.training:  # calibration maps the trained logit; training sees it raw
            logit = logit * self.calibration[0] + self.calibration[1]
            if sizes is not None:
                logit = logit + sizes @ self.size_weights
        out = torch.cat([logit.unsqueeze(1), self.scale.restore(z)], dim=1)
        return (out, mask_logits) if with_mask else out

    def raw_outputs(
        self, x: torch.Tensor, views: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Uncalibrated (B,) logits, (B, A) standardised attributes, (B, 2) mask-measured sizes
        (:func:`mask_sizes`; ``None`` without the mask head), each the mean over ``views``
        symmetries, and the mask logits (one view only, else ``None``)."""
        if views > 1:
            logit, z, sizes = self._mean_over_views(x, views)
            return logit, z, sizes, None
        logit, z, mask_logits = self.heads(x)
        sizes = None if mask_logits is None else mask_sizes(mask_logits)
        return logit, z, sizes, mask_logits

    def _mean_over_views(
        self, x: torch.Tensor, views: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The mean logit, attributes and mask sizes over the first ``views`` symmetries, as
        many views per pass as keep it within :data:`VIEW_CUBES` cubes (a small batch: all in
        one pass; a large one: a view at a time). In a graph being captured, a view at a
        time."""
        b = x.shape[0]
        eager = not (torch.jit.is_tracing() or torch.compiler.is_compiling())
        group = max(1, VIEW_CUBES // max(1, b)) if eager else 1
        sums: list[torch.Tensor | None] = [None, None, None]
        for start in range(0, views, group):
            chosen = range(start, min(views, start + group))
            stacked = torch.cat([symmetric_views(x, i) for i in chosen])
            logit, z, mask_logits = self.heads(stacked)  # (k B,), (k B, A), (k B, 1, ...)
            sizes = None if mask_logits is None else mask_sizes(mask_logits)
            parts = [logit.unsqueeze(1), z, sizes]
            for j, part in enumerate(parts):
                if part is not None:
                    part = part.reshape(len(chosen), b, part.shape[-1]).sum(0)
                    sums[j] = part if sums[j] is None else sums[j] + part
        logit_sum, z_sum, size_sum = sums
        assert logit_sum is not None and z_sum is not None
        sizes = None if size_sum is None else size_sum / views
        return logit_sum[:, 0] / views, z_sum / views, sizes

    @contextmanager
    def single_view(self) -> Iterator[None]:
        """Test-time augmentation off inside the block (Grad-CAM needs one pass per cube)."""
        tta, self.tta = self.tta, 1
        try:
            yield
        finally:
            self.tta = tta

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        # versions saved before calibration (or size weights) existed load without them
        for name in ("calibration", "size_weights"):
            if not self.restore and prefix + name not in state_dict:
                state_dict[prefix + name] = getattr(self, name).detach().clone()
        super()._load_from_state_dict(state_dict, prefix, *args)


def _r3d18() -> nn.Module:
    """torchvision's R3D-18 (Tran et al. 2018) for one-channel cubes, without its classifier:
    (B, 1, S, S, S) -> (B, 512)."""
    from abyssal.core.optional import require

    video = require("torchvision.models.video", extra="nodule", purpose="the 3-D ResNet-18")
    net = video.r3d_18(weights=None)
    net.stem[0] = nn.Conv3d(1, 64, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False)
    net.fc = nn.Identity()
    return net


def attribute_scale(values: np.ndarray, names: Sequence[str]) -> tuple[list, ...]:
    """``(center, scale, log, low, high)`` per attribute from training values (NaN ignored): the
    diameter on a log scale, ratings as they are; a constant attribute gets scale 1. ``low`` and
    ``high`` clip predictions: the training range (the diameter's widened by half its ends)."""
    center, scale, log, low, high = [], [], [], [], []
    for j, name in enumerate(names):
        raw = values[:, j]
        raw = raw[~np.isnan(raw)]
        is_log = name == "diameter_mm"
        column = np.log(np.maximum(raw, 1e-3)) if is_log else raw
        mean = float(column.mean()) if len(column) else 0.0
        std = float(column.std()) if len(column) > 1 else 1.0
        center.append(mean)
        scale.append(std if std > 1e-6 else 1.0)
        log.append(is_log)
        lo, hi = (float(raw.min()), float(raw.max())) if len(raw) else (-1e6, 1e6)
        low.append(lo / 1.5 if is_log else lo)
        high.append(hi * 1.5 if is_log else hi)
    return center, scale, log, low, high


def build_nodule_model(model_cfg: Any, spec: Mapping[str, Any]) -> NoduleNet:
    """The network for a model config and spec (``attributes``, ``attribute_scale``,
    ``objective``)."""
    names = list(spec.get("attributes", []))
    restore = spec.get("objective") == "genesis"
    net = NoduleNet(
        model_cfg.width,
        0 if restore else len(names),
        knowledge=model_cfg.knowledge,
        fusion=model_cfg.fusion,
        dropout=model_cfg.dropout,
        scale=tuple(spec["attribute_scale"]) if spec.get("attribute_scale") else None,
        arch=model_cfg.arch,
        restore=restore,
        segment=getattr(model_cfg, "segment", False),
        tta=getattr(model_cfg, "tta", 1),
        mask_grid=spec.get("mask_grid", "half"),
    )
    net.nodule_spec = dict(spec)  # plain data beside the weights
    return net


def encoder_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder (and fusion) tensors of a state dict."""
    return {k: v for k, v in state.items() if k.startswith(ENCODER_PREFIXES)}


def load_encoder(model: NoduleNet, state: Mapping[str, torch.Tensor], source: str) -> int:
    """Copy a pretrained encoder into ``model``; returns the tensors copied. Refuses (naming
    ``source``) weights whose stem and stages do not fit."""
    from abyssal.core.errors import ConfigError

    wanted = encoder_state(model.state_dict())
    given = encoder_state(state)
    core = [k for k in wanted if k.startswith(CORE_PREFIXES)]
    missing = sorted(k for k in core if k not in given)
    wrong = [k for k in core if k in given and given[k].shape != wanted[k].shape]
    if missing or wrong:
        detail = f"missing {missing[:3]}" if missing else f"shape of {wrong[:3]} differs"
        raise ConfigError(
            f"model.pretrained={source}: its encoder does not fit this model ({detail}); use the "
            "same model.arch, model.width and model.fusion as the pretraining"
        )
    fits = {k: v for k, v in given.items() if k in wanted and v.shape == wanted[k].shape}
    model.load_state_dict(fits, strict=False)
    return len(fits)
