"""The defect classifier: a torchvision, timm or plugin backbone, its starting weights, and heads.

:class:`DefectNet` takes images as float tensors in ``[0, 1]`` and normalises them itself, so the
exported, compiled or quantized model needs nothing but the pixels. Its parameter names are
``backbone.*`` (the feature extractor, pooled to one vector per image) and ``head.*`` (the
classifier), which ``train.lr_multipliers`` and ``train.delayed`` address for staged fine-tuning.

``model.backbone`` names the feature extractor
(:func:`abyssal.nn.backbones.make_backbone`): one of :data:`abyssal.nn.backbones.BACKBONES`
(abyssal's torchvision names and those plugins add), any other torchvision classification
model, or ``timm:NAME``.

Backbone plugins (entry-point group ``abyssal.backbones``) are described in
:mod:`abyssal.nn.backbones`.

Example:
    >>> net = build_backbone_net("resnet18", classes=6, channels=1)  # doctest: +SKIP
    >>> net(torch.rand(2, 1, 64, 64)).shape  # doctest: +SKIP
    torch.Size([2, 6])
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from abyssal.core.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, with the statistics as (non-trained) buffers.

    Shapes:
        x: (B, C, H, W) float in [0, 1]; the output has the same shape.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).reshape(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class DefectNet(nn.Module):
    """Images to class logits: normalise, backbone (pooled features), dropout, linear head.

    Args:
        backbone: maps (B, C, H, W) to (B, features).
        features: the backbone's output width.
        classes: number of classes (the head's outputs); for SimCLR, the projection's size.
        channels: 1 (grey) or 3 (colour) input channels.
        dropout: before the head.
        projection: a two-layer MLP head (SimCLR's projection g) instead of a linear one.

    Shapes:
        x: (B, C, H, W) float in [0, 1]; ``forward`` gives (B, classes); ``embed`` (B, features).
    """

    def __init__(
        self,
        backbone: nn.Module,
        features: int,
        classes: int,
        *,
        channels: int,
        dropout: float = 0.0,
        projection: bool = False,
    ) -> None:
        super().__init__()
        mean = IMAGENET_MEAN if channels == 3 else (sum(IMAGENET_MEAN) / 3,)
        std = IMAGENET_STD if channels == 3 else (sum(IMAGENET_STD) / 3,)
        self.normalize = Normalize(mean, std)
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        if projection:
            self.head: nn.Module = nn.Sequential(
                nn.Linear(features, features), nn.ReLU(inplace=True), nn.Linear(features, classes)
            )
        else:
            self.head = nn.Linear(features, classes)
        self.channels = channels

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features, (B, features)."""
        return self.backbone(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(x)))


def adapt_state_dict(
    state: Mapping[str, torch.Tensor], model: nn.Module
) -> dict[str, torch.Tensor]:
    """Fit backbone weights to ``model``'s shapes: RGB first-conv weights summed over their
    input channels for a grey model (timm's rule); the classifier's keys are left out."""
    own = model.state_dict()
    out = {}
    for key, value in state.items():
        if key not in own:
            continue
        if value.shape != own[key].shape and value.dim() == 4 and own[key].shape[1] == 1:
            value = value.sum(dim=1, keepdim=True)  # (O, 3, k, k) -> (O, 1, k, k)
        out[key] = value
    return out


def read_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch file (loaded with ``weights_only``); a
    ``state_dict`` / ``model`` entry is unwrapped and ``module.`` prefixes are removed."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model.pretrained: no such file {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ConfigError(
                f"model.pretrained: {path} is not a torch weights file ({exc})"
            ) from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"model.pretrained: {path} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def imagenet_weights(name: str) -> dict[str, torch.Tensor]:
    """torchvision's default ImageNet weights of ``name`` (downloaded once into torch's cache)."""
    from torchvision import models

    try:
        weights = models.get_model_weights(name).DEFAULT
        return weights.get_state_dict(progress=True)
    except Exception as exc:
        raise ConfigError(
            f"model.pretrained=imagenet: torchvision's {name} weights could not be had ({exc}); "
            "download them where a network is available and pass the file as "
            "model.pretrained=PATH, or pretrain with objective=simclr"
        ) from None


def load_backbone_weights(
    model: DefectNet, state: Mapping[str, torch.Tensor], *, source: str
) -> int:
    """Load backbone weights into ``model.backbone`` from a state dict keyed either like the
    bare backbone (``layer1.0.conv1.weight``) or like a :class:`DefectNet` (``backbone.*``).

    Returns:
        How many tensors were loaded.

    Raises:
        ConfigError: nothing matched, or a tensor's shape differs (named).
    """
    if any(k.startswith("backbone.") for k in state):
        state = {k[9:]: v for k, v in state.items() if k.startswith("backbone.")}
    state = adapt_state_dict(state, model.backbone)
    own = model.backbone.state_dict()
    wrong = [k for k, v in state.items() if v.shape != own[k].shape]
    if wrong:
        k = wrong[0]
        raise ConfigError(
            f"model.pretrained={source}: {k} has shape {tuple(state[k].shape)}, the backbone "
            f"{tuple(own[k].shape)} (another architecture? check model.backbone)"
        )
    if not state:
        raise ConfigError(f"model.pretrained={source}: no tensor matches model.backbone")
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if len(missing) > len(own) // 2:
        raise ConfigError(
            f"model.pretrained={source}: only {len(state)} of {len(own)} backbone tensors match "
            f"(e.g. {missing[0]} is missing): another architecture? check model.backbone"
        )
    model.backbone.load_state_dict(state, strict=False)
    return len(state)


def prototype_logits(embeddings: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Nearest-class-mean scores: negative squared Euclidean distance of L2-normalised
    embeddings to L2-normalised class means (Snell et al. 2017, "Prototypical Networks").

    Shapes:
        embeddings: (N, D); prototypes: (K, D); returns (N, K).
    """
    z = F.normalize(embeddings.float(), dim=1)
    p = F.normalize(prototypes.float(), dim=1)
    return -torch.cdist(z, p).pow(2)


def class_means(embeddings: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """(K, D) mean of each class's L2-normalised embeddings; a class without any is an error."""
    z = F.normalize(embeddings.float(), dim=1)
    counts = torch.bincount(labels, minlength=classes)
    if bool((counts == 0).any()):
        raise ValueError(f"class {int((counts == 0).nonzero()[0])} has no embedding")
    sums = torch.zeros(classes, z.shape[1]).index_add_(0, labels, z)
    return sums / counts[:, None].float()
